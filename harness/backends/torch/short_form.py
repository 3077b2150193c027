"""The standard AlgoPerf submission functions around a short-form PyTorch submission.

A short-form submission defines only

    make_optimizer(model, hyperparameters, workload) -> Optimizer | (Optimizer, LRScheduler | None)

and the harness supplies `init_optimizer_state` and `update_params`: one step is
zero_grad -> forward (train mode, BatchNorm updates) -> mean loss with the point's
`label_smoothing` -> backward -> optional `grad_clip` by global norm -> optimizer.step()
-> scheduler.step(). Hyperparameters `dropout_rate`, `label_smoothing` and `grad_clip` are
honoured when the point has them. Under the self-tuning ruleset (no point), a module-level
`SELF_TUNING_DEFAULTS` of the submission stands in for the point, in both functions.
In a trial of several processes (one per device, the model in DDP), the summed loss and the example
count are summed over the processes before the division, as AlgoPerf's baselines do, so the loss is
the mean over the global batch and so is its gradient (`distributed.py`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from harness import spec
from harness.backends.torch import distributed

MakeOptimizer = Callable[[torch.nn.Module, spec.Hyperparameters, spec.Workload], Any]


def standard_functions(
    make_optimizer: MakeOptimizer, self_tuning_defaults: spec.Hyperparameters = None
) -> dict[str, Callable]:
    """`init_optimizer_state` and `update_params` for a short-form submission."""

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        del model_state, rng
        hyperparameters = self_tuning_defaults if hyperparameters is None else hyperparameters
        made = make_optimizer(model_params, hyperparameters, workload)
        optimizer, scheduler = made if isinstance(made, tuple) else (made, None)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"make_optimizer must return a torch.optim.Optimizer, got {type(optimizer).__name__}")
        return {"optimizer": optimizer, "scheduler": scheduler}

    def update_params(
        workload,
        current_param_container,
        current_params_types,
        model_state,
        hyperparameters,
        batch,
        loss_type,
        optimizer_state,
        eval_results,
        global_step,
        rng,
        train_state=None,
    ):
        del current_params_types, loss_type, eval_results, global_step, train_state
        hyperparameters = self_tuning_defaults if hyperparameters is None else hyperparameters
        model = current_param_container
        optimizer_state["optimizer"].zero_grad(set_to_none=True)
        logits, new_model_state = workload.model_fn(
            params=model,
            augmented_and_preprocessed_input_batch=batch,
            model_state=model_state,
            mode=spec.ForwardPassMode.TRAIN,
            rng=rng,
            update_batch_norm=True,
            dropout_rate=getattr(hyperparameters, "dropout_rate", None),
        )
        loss_dict = workload.loss_fn(
            label_batch=batch["targets"],
            logits_batch=logits,
            mask_batch=batch.get("weights"),
            label_smoothing=getattr(hyperparameters, "label_smoothing", 0.0),
        )
        loss, _ = distributed.global_mean(loss_dict["summed"], loss_dict["n_valid_examples"])
        loss.backward()
        grad_clip = getattr(hyperparameters, "grad_clip", None)
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
        optimizer_state["optimizer"].step()
        if optimizer_state["scheduler"] is not None:
            optimizer_state["scheduler"].step()
        return optimizer_state, model, new_model_state

    return {"init_optimizer_state": init_optimizer_state, "update_params": update_params}

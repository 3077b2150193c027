"""Evaluation at averaged weights, for full-API PyTorch submissions built on a short-form optimizer:
exponential moving averages (`ema`), latest weight averaging (`lawa`), polynomial-decay averaging
(`dog`) and schedule-free optimizers (`schedule_free_adamw`, `schedule_free_sgd`).

An averager keeps its average beside the live weights. `prepare_for_eval` swaps the two by
exchanging tensor storage (no copy), so the harness evaluates — and checkpoints — the average; the
next `update_params` swaps back before stepping. The averager's state dict records which side is
which, so a checkpoint taken between the two resumes correctly.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import torch

from harness import spec
from harness.averaging import BN_BATCHES
from harness.backends.torch.short_form import MakeOptimizer, standard_functions


def exchange(first: Sequence[torch.Tensor], second: Sequence[torch.Tensor]) -> None:
    """Swap the storage of two lists of same-shaped tensors in place (parameters stay the same objects)."""
    for a, b in zip(first, second, strict=True):
        a.data, b.data = b.data, a.data


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Averager(Protocol):
    swapped: bool  # True while the live weights hold the average

    def update(self, global_step: int) -> None:
        """Fold in the live weights after step `global_step` (0-based)."""

    def ready(self) -> bool:
        """Whether there is an average to evaluate."""

    def swap(self) -> None:
        """Exchange the live weights and the average."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ExponentialMovingAverage:
    """θ̄ ← β θ̄ + (1 − β) θ after every step, from θ̄₀ = θ₀ (Polyak & Juditsky, 1992, in its EMA form)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.live = list(model.parameters())
        self.average = [p.detach().clone() for p in self.live]
        self.decay, self.swapped = decay, False

    @torch.no_grad()
    def update(self, global_step: int) -> None:
        torch._foreach_lerp_(self.average, self.live, 1.0 - self.decay)

    def ready(self) -> bool:
        return True

    def swap(self) -> None:
        exchange(self.live, self.average)
        self.swapped = not self.swapped

    def state_dict(self) -> dict:
        return {"average": self.average, "swapped": self.swapped}

    def load_state_dict(self, state: dict) -> None:
        torch._foreach_copy_(self.average, state["average"])
        self.swapped = state["swapped"]


class LatestWeightAverage:
    """LAWA (Kaddour, 2022; Sanyal et al., 2023): the mean of the latest k snapshots of θ, one taken
    every `interval` steps. Evaluated only once k snapshots exist (the queue is full)."""

    def __init__(self, model: torch.nn.Module, queue_length: int, interval: int) -> None:
        if queue_length < 1 or interval < 1:
            raise ValueError(f"LAWA needs queue_length >= 1 and interval >= 1, got {queue_length} and {interval}")
        self.live = list(model.parameters())
        self.snapshots = [[torch.zeros_like(p) for p in self.live] for _ in range(queue_length)]
        self.average = [torch.zeros_like(p) for p in self.live]
        self.interval, self.taken, self.swapped = interval, 0, False

    @torch.no_grad()
    def update(self, global_step: int) -> None:
        if (global_step + 1) % self.interval == 0:
            torch._foreach_copy_(self.snapshots[self.taken % len(self.snapshots)], self.live)
            self.taken += 1

    def ready(self) -> bool:
        return self.taken >= len(self.snapshots)

    @torch.no_grad()
    def swap(self) -> None:
        if not self.swapped:
            torch._foreach_copy_(self.average, self.snapshots[0])
            for snapshot in self.snapshots[1:]:
                torch._foreach_add_(self.average, snapshot)
            torch._foreach_div_(self.average, float(len(self.snapshots)))
        exchange(self.live, self.average)
        self.swapped = not self.swapped

    def state_dict(self) -> dict:
        return {"snapshots": self.snapshots, "average": self.average, "taken": self.taken, "swapped": self.swapped}

    def load_state_dict(self, state: dict) -> None:
        for mine, saved in zip(self.snapshots, state["snapshots"], strict=True):
            torch._foreach_copy_(mine, saved)
        torch._foreach_copy_(self.average, state["average"])
        self.taken, self.swapped = state["taken"], state["swapped"]


class ModuleAverage:
    """An averager that keeps its average as a copy of the whole module (parameters and floating-point
    buffers, so BatchNorm statistics too), updated by `step()` of an object such as
    `dog.PolynomialDecayAverager` that exposes the copy as `.averaged_model` and its count as `.t`."""

    def __init__(self, model: torch.nn.Module, averager) -> None:
        self.averager, self.swapped = averager, False
        self.live = self._tensors(model)
        self.average = self._tensors(averager.averaged_model)

    @staticmethod
    def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
        buffers = [b for b in module.buffers() if b.is_floating_point()]
        return [*module.parameters(), *buffers]

    @torch.no_grad()
    def update(self, global_step: int) -> None:
        self.averager.step()

    def ready(self) -> bool:
        return True

    def swap(self) -> None:
        exchange(self.live, self.average)
        self.swapped = not self.swapped

    def state_dict(self) -> dict:
        return {"t": self.averager.t, "averaged_model": self.averager.averaged_model.state_dict(), "swapped": self.swapped}

    def load_state_dict(self, state: dict) -> None:
        self.averager.averaged_model.load_state_dict(state["averaged_model"])
        self.averager.t, self.swapped = state["t"], state["swapped"]


MakeAverager = Callable[[torch.nn.Module, spec.Hyperparameters, spec.Workload], Averager]


def averaging_functions(
    make_optimizer: MakeOptimizer, make_averager: MakeAverager, self_tuning_defaults: spec.Hyperparameters
) -> dict[str, Callable]:
    """AlgoPerf's functions for a short-form optimizer plus an averager evaluated in its place: the
    harness's standard step (run with `self_tuning_defaults` when the ruleset gives no
    hyperparameters), preceded by swapping the training weights back when the average is in, and
    followed by `averager.update`."""
    base = standard_functions(make_optimizer)

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        optimizer_state = base["init_optimizer_state"](workload, model_params, model_state, hyperparameters, rng)
        optimizer_state["averager"] = make_averager(model_params, hyperparameters or self_tuning_defaults, workload)
        return optimizer_state

    def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                      batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
        averager = optimizer_state["averager"]
        if averager.swapped:
            averager.swap()
        result = base["update_params"](
            workload, current_param_container, current_params_types, model_state,
            hyperparameters or self_tuning_defaults, batch, loss_type, optimizer_state, eval_results, global_step,
            rng, train_state,
        )
        averager.update(global_step)
        return result

    def prepare_for_eval(workload, current_param_container, current_params_types, model_state, hyperparameters,
                         loss_type, optimizer_state, eval_results, global_step, rng):
        averager = optimizer_state["averager"]
        if not averager.swapped and averager.ready():
            averager.swap()
        return optimizer_state, current_param_container, model_state

    return {"init_optimizer_state": init_optimizer_state, "update_params": update_params,
            "prepare_for_eval": prepare_for_eval}


class InputQueueHandle:
    """The trial's input queue, kept for `prepare_for_eval`. It is not saved in checkpoints (empty
    state dict); after a resume `data_selection` hands it the new queue."""

    def __init__(self) -> None:
        self.queue: Iterator[dict[str, torch.Tensor]] | None = None

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.queue is None:
            raise RuntimeError("no input queue yet: prepare_for_eval ran before any data_selection call")
        return next(self.queue)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


@torch.no_grad()
def recompute_batch_norm(
    workload: spec.Workload, model: torch.nn.Module, model_state: spec.ModelAuxiliaryState,
    queue: InputQueueHandle, rng: spec.RandomState, num_batches: int,
) -> spec.ModelAuxiliaryState:
    """Refresh BatchNorm running statistics at the current weights with `num_batches` forward passes
    in train mode. Parameters are frozen meanwhile so the train-mode forward builds no graph."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        for _ in range(num_batches):
            _, model_state = workload.model_fn(
                model, queue.next_batch(), model_state, spec.ForwardPassMode.TRAIN, rng, update_batch_norm=True
            )
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return model_state


def schedule_free_functions(
    make_optimizer: MakeOptimizer, self_tuning_defaults: spec.Hyperparameters
) -> dict[str, Callable]:
    r"""AlgoPerf's functions for a `make_optimizer` that returns a `schedulefree` optimizer
    (Defazio et al., 2024, "The Road Less Scheduled", arXiv:2405.15682).

    The optimizer keeps z (the base iterate) and x (the average that is evaluated) and takes
    gradients at y:

        y_t = (1 − β) z_t + β x_t,   z_{t+1} = z_t − γ_t ∇f(y_t),   x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}

    with c_{t+1} = γ_t^p / Σ_{i≤t} γ_i^p (p = `weight_lr_power`). The parameters hold y while training
    and x while evaluating: `prepare_for_eval` calls `optimizer.eval()`, the next `update_params`
    `optimizer.train()` (the optimizer's state dict records which). BatchNorm running statistics
    were gathered at y, so for models with BatchNorm `prepare_for_eval` runs BN_BATCHES training
    batches forward in train mode at x without gradients, as the package's README prescribes
    ("Caveats"). Those batches come from the input queue, which `data_selection` keeps a handle to,
    and are not trained on; models without BatchNorm skip this. The harness's standard step runs
    with `self_tuning_defaults` when the ruleset gives no hyperparameters.
    """
    base = standard_functions(make_optimizer)

    def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
        optimizer_state = base["init_optimizer_state"](workload, model_params, model_state, hyperparameters, rng)
        optimizer_state["optimizer"].train()
        optimizer_state["input_queue"] = InputQueueHandle()
        return optimizer_state

    def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,
                       hyperparameters, global_step, rng):
        optimizer_state["input_queue"].queue = input_queue
        return next(input_queue)

    def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                      batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
        optimizer_state["optimizer"].train()  # parameters back to y; a no-op when already there
        return base["update_params"](
            workload, current_param_container, current_params_types, model_state,
            hyperparameters or self_tuning_defaults, batch, loss_type, optimizer_state, eval_results, global_step,
            rng, train_state,
        )

    def prepare_for_eval(workload, current_param_container, current_params_types, model_state, hyperparameters,
                         loss_type, optimizer_state, eval_results, global_step, rng):
        optimizer_state["optimizer"].eval()  # parameters to x
        if has_batch_norm(current_param_container):
            model_state = recompute_batch_norm(
                workload, current_param_container, model_state, optimizer_state["input_queue"], rng, BN_BATCHES
            )
        return optimizer_state, current_param_container, model_state

    return {"init_optimizer_state": init_optimizer_state, "data_selection": data_selection,
            "update_params": update_params, "prepare_for_eval": prepare_for_eval}

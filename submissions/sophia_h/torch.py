"""Sophia-H (Liu et al., 2023, arXiv:2305.14342): Sophia's clipped diagonal-Newton update with a
Hutchinson estimate of the Hessian diagonal, ĥ = u ⊙ (∇²L u) with u ~ N(0, I), refreshed every
k = 10 steps.

    python submit.py --workload kjv_lm --submission sophia_h

On refresh steps (t = 1, k+1, 2k+1, ..., Algorithm 3) the backward pass keeps its graph for one
Hessian-vector product at θ_t on the step's batch; attention then runs its math kernel, the only
one with a double backward. Other steps are a plain forward and backward.

Documented difference: the only official SophiaH (Liuhong99/Sophia sophia.py from the first commit,
01af183, to c503211; removed in 195a786, May 2023, and in no package) divides its step by 1 − β₁ᵗ
(lines 386-392 at c503211). Algorithm 3 of the paper has no such factor, nor has this submission
(nor pytorch-optimizer's SophiaH); early in training the official step is up to 1/(1 − β₁) = 25 times
larger for β₁ = 0.96.
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.curvature import (
    average_gradients, gradients_with_hutchinson, mean_loss, sophia_optimizer_state, training_logits,
)
from submissions.sophia_h.common import EPSILON, HESSIAN_INTERVAL, PROBES, SELF_TUNING_DEFAULTS


def init_optimizer_state(
    workload: spec.Workload, model_params: torch.nn.Module, model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters, rng: spec.RandomState,
) -> dict:
    del model_state, rng
    return sophia_optimizer_state(workload, model_params, hyperparameters or SELF_TUNING_DEFAULTS, EPSILON)


def update_params(
    workload: spec.Workload, current_param_container: torch.nn.Module, current_params_types,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters, batch: dict[str, torch.Tensor],
    loss_type: spec.LossType, optimizer_state: dict, eval_results: list, global_step: int, rng: spec.RandomState,
    train_state: dict | None = None,
) -> spec.UpdateReturn:
    """One Sophia-H step; on every k-th step also refresh h with a Hutchinson probe."""
    del current_params_types, loss_type, eval_results, train_state
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    model, optimizer = current_param_container, optimizer_state["optimizer"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    if global_step % HESSIAN_INTERVAL == 0:
        new_model_state, estimates = gradients_with_hutchinson(
            workload, model, model_state, batch, hp, rng, params, PROBES
        )
        optimizer.update_hessian(estimates)
    else:
        logits, new_model_state = training_logits(workload, model, model_state, batch, hp, rng)
        loss, _ = mean_loss(workload, logits, batch["targets"], batch, hp.label_smoothing)
        loss.backward()
        average_gradients(params)
    torch.nn.utils.clip_grad_norm_(params, max_norm=hp.grad_clip)
    optimizer.step()
    optimizer_state["scheduler"].step()
    return optimizer_state, model, new_model_state

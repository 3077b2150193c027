"""AdaHessian (Yao et al., 2021, AAAI, arXiv:2006.00719): Adam with the squared gradient replaced by
a spatially averaged Hutchinson estimate of the Hessian diagonal, drawn with Rademacher probes at
every step.

    python submit.py --workload fashion_mnist --submission adahessian

One step: forward in train mode, backward with `create_graph=True`, one Hessian-vector product
with a Rademacher probe z, D = spatial average of |z ⊙ Hz| (per 3x3 kernel for convolutions), then
`harness.backends.torch.curvature.AdaHessian` steps. Attention runs its math kernel, the only one with a double
backward.
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.curvature import AdaHessian, gradients_with_hutchinson, spatially_averaged
from harness.backends.torch.schedules import warmup_cosine_decay
from submissions.adahessian.common import EPSILON, PROBES, SELF_TUNING_DEFAULTS


def init_optimizer_state(
    workload: spec.Workload, model_params: torch.nn.Module, model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters, rng: spec.RandomState,
) -> dict:
    del model_state, rng
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = AdaHessian(
        model_params.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay, hessian_power=hp.hessian_power,
    )
    return {"optimizer": optimizer, "scheduler": warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)}


def update_params(
    workload: spec.Workload, current_param_container: torch.nn.Module, current_params_types,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters, batch: dict[str, torch.Tensor],
    loss_type: spec.LossType, optimizer_state: dict, eval_results: list, global_step: int, rng: spec.RandomState,
    train_state: dict | None = None,
) -> spec.UpdateReturn:
    """One AdaHessian step: gradient, one Rademacher Hessian-vector product, update."""
    del current_params_types, loss_type, eval_results, global_step, train_state
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    model, optimizer = current_param_container, optimizer_state["optimizer"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    new_model_state, probes = gradients_with_hutchinson(workload, model, model_state, batch, hp, rng, params, PROBES)
    optimizer.step(spatially_averaged(probes))
    optimizer_state["scheduler"].step()
    return optimizer_state, model, new_model_state

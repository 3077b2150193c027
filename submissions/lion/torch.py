"""Lion, "EvoLved Sign Momentum" (Chen et al., 2023, NeurIPS, arXiv:2302.06675, Program 1), with
linear warmup and cosine decay to 0 at step_hint.

    python submit.py --workload kjv_lm --submission lion
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.foreach import ForeachOptimizer
from harness.backends.torch.schedules import warmup_cosine_decay
from submissions.lion.common import SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


class Lion(ForeachOptimizer):
    r"""Lion's update, with gradient g, learning rate η and decoupled weight decay λ:

        c = β₁ m + (1 − β₁) g
        θ ← θ (1 − η λ) − η sign(c)
        m ← β₂ m + (1 − β₂) g
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if lr < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid Lion hyperparameters: lr={lr}, betas={betas}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    state_keys = ("exp_avg",)

    def update_group(self, group, params, grads, states, t) -> None:
        exp_avgs = [s["exp_avg"] for s in states]
        lr, (beta1, beta2) = group["lr"], group["betas"]
        updates = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_sign_(updates)
        torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        torch._foreach_add_(params, updates, alpha=-lr)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = Lion(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2), weight_decay=hp.weight_decay
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

"""NAdamW with linear warmup and cosine decay: AlgoPerf's baseline (Dahl et al., 2023, arXiv:2306.07179;
the external-tuning qualification baseline of mlcommons/algorithmic-efficiency).

    python submit.py --workload fashion_mnist --submission nadamw --num_tuning_trials 5
"""

from __future__ import annotations

import math

import torch

from harness import spec
from harness.backends.torch.foreach import ForeachOptimizer
from harness.backends.torch.schedules import warmup_cosine_decay
from submissions.nadamw.common import EPSILON, SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


class NAdamW(ForeachOptimizer):
    r"""Adam with Nesterov momentum and decoupled weight decay, as in AlgoPerf's baseline.

    With gradient g, step t, learning rate \eta (the scheduled one) and weight decay \lambda:
        \theta <- \theta (1 - \eta \lambda)
        m <- \beta_1 m + (1 - \beta_1) g,   v <- \beta_2 v + (1 - \beta_2) g^2
        \hat m = (\beta_1 m + (1 - \beta_1) g) / (1 - \beta_1^t)
        \theta <- \theta - \eta \hat m / (\sqrt{v / (1 - \beta_2^t)} + \epsilon)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = EPSILON, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid NAdamW hyperparameters: lr={lr}, betas={betas}, eps={eps}, wd={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    state_keys = ("exp_avg", "exp_avg_sq")

    def update_group(self, group, params, grads, states, t) -> None:
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        lr, (beta1, beta2) = group["lr"], group["betas"]
        torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        nesterov = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, math.sqrt(1.0 - beta2**t))
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_addcdiv_(params, nesterov, denominators, value=-lr / (1.0 - beta1**t))

def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = NAdamW(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2),
        weight_decay=hp.weight_decay,
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

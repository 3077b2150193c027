"""diffGrad (Dubey et al., 2020, IEEE TNNLS, arXiv:1909.11015): Adam whose step is damped by a
"friction" coefficient that is small where the gradient changes little between steps; with
decoupled weight decay, linear warmup and cosine decay to 0 at step_hint.

    python submit.py --workload fashion_mnist --submission diffgrad
"""

from __future__ import annotations

import math

import torch

from harness import spec
from harness.backends.torch.foreach import ForeachOptimizer
from harness.backends.torch.schedules import warmup_cosine_decay

EPSILON = 1e-8  # official diffGrad default (shivram1987/diffGrad)

# Self-tuning ruleset: the official defaults (lr 1e-3, β = (0.9, 0.999), weight decay 0); warmup 5% as in
# AlgoPerf's AdamW search space.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 1e-3, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 0.0, "warmup_factor": 0.05,
})


class DiffGrad(ForeachOptimizer):
    r"""diffGrad's update (Algorithm 1), with step t, gradient g_t, learning rate η and weight decay λ,
    applied decoupled as in AdamW (the authors' code adds λθ to g):

        m ← β₁ m + (1 − β₁) g_t,   v ← β₂ v + (1 − β₂) g_t²
        ξ = sigmoid(|g_{t−1} − g_t|)          (g_0 = 0)
        θ ← θ (1 − η λ) − η √(1 − β₂ᵗ)/(1 − β₁ᵗ) · ξ m / (√v + ε)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = EPSILON,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid diffGrad hyperparameters: lr={lr}, betas={betas}, eps={eps}, wd={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    state_keys = ("exp_avg", "exp_avg_sq", "previous_grad")

    def update_group(self, group, params, grads, states, t) -> None:
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        previous = [s["previous_grad"] for s in states]
        lr, (beta1, beta2) = group["lr"], group["betas"]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        friction = torch._foreach_sub(previous, grads)
        torch._foreach_abs_(friction)
        torch._foreach_sigmoid_(friction)
        torch._foreach_mul_(friction, exp_avgs)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        step_size = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        torch._foreach_addcdiv_(params, friction, denominators, value=-step_size)
        torch._foreach_copy_(previous, grads)


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = DiffGrad(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2),
        weight_decay=hp.weight_decay,
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

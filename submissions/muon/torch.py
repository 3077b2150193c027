"""Muon, "MomentUm Orthogonalized by Newton-Schulz" (Jordan et al., 2024, kellerjordan.github.io/posts/muon;
KellerJordan/Muon): Nesterov momentum whose update for each hidden weight matrix is replaced by an
approximate orthogonalisation; AdamW for every other parameter. Linear warmup and cosine decay to 0
at step_hint scale both learning rates.

    python submit.py --workload kjv_lm --submission muon

Hidden weights are the parameters with two or more dimensions that are neither embeddings nor the
output layer. Each is orthogonalised as the matrix (first dimension, all the others), so a convolution
kernel (out, in, k_h, k_w) as (out, in·k_h·k_w), as the reference does. The update's shape scale
√max(1, A/B) follows the reference's `muon_update` (KellerJordan/Muon muon.py lines 34-41 at 857d1ad,
the same rule since fc20399, February 2025, and in the authors' PyPI release muon-optimizer 0.1.0):
A/B is rows/cols for a matrix but k_h/k_w for a 4-D kernel, whose last two dimensions it reads (1 for
square kernels). See `shape_scale`.
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.foreach import evaluate_closure, groups_with_gradients
from harness.backends.torch.schedules import warmup_cosine_decay
from submissions.muon import common
from submissions.muon.common import (ADAM_BETAS, ADAM_EPSILON, NEWTON_SCHULZ_COEFFICIENTS, NEWTON_SCHULZ_STEPS,
                                     SELF_TUNING_DEFAULTS, is_hidden_matrix, shape_scale)

NEWTON_SCHULZ_DTYPE = getattr(torch, common.NEWTON_SCHULZ_DTYPE)  # bfloat16, as the reference

def orthogonalize(update: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS, dtype: torch.dtype = NEWTON_SCHULZ_DTYPE):
    r"""Approximate U Vᵀ of the matrix G = U S Vᵀ (`update` viewed as (first dimension, the rest)) with the
    quintic Newton-Schulz iteration:

        X ← G / (‖G‖_F + 1e-7)   (transposed when G has more rows than columns)
        repeat `steps` times:  A = X Xᵀ,  B = b A + c A²,  X ← a X + B X

    The result has singular values roughly in [0.7, 1.2] rather than exactly 1, which the reference
    found not to hurt. Returned in `dtype`, shaped like `update`. The products are formed in the
    reference's order, B = b·A + (c·A)·A and X = a·X + B·X, each rounded to `dtype` (muon.py lines 25-27),
    so that the bfloat16 result is the reference's to the bit; a fused addmm rounds differently.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    matrix = update.reshape(update.shape[0], -1)
    transpose = matrix.shape[0] > matrix.shape[1]
    x = (matrix.mT if transpose else matrix).to(dtype)
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        polynomial = b * gram + (c * gram) @ gram
        x = a * x + polynomial @ x
    return (x.mT if transpose else x).reshape(update.shape)


class Muon(torch.optim.Optimizer):
    r"""Muon for parameter groups with `use_muon=True`, AdamW for the others.

    Muon groups, with momentum μ, learning rate η and weight decay λ:
        b ← μ b + (1 − μ) g,   u = (1 − μ) g + μ b   (Nesterov)
        θ ← θ (1 − η λ) − η · shape_scale(θ.shape) · orthogonalize(u)
    (rows/cols for a matrix, k_h/k_w for a convolution kernel: see `shape_scale`).
    AdamW groups: Adam with bias correction and decoupled weight decay,
        θ ← θ (1 − η λ) − η (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
    Both are computed in the reference's order of operations (KellerJordan/Muon muon.py), so that a
    float32 run follows the reference's to the bit.
    """

    def __init__(self, param_groups: list[dict]):
        for group in param_groups:
            if "use_muon" not in group:
                raise ValueError("each Muon parameter group needs use_muon=True (hidden matrices) or False (AdamW)")
            group.setdefault("weight_decay", 0.0)
            if group["use_muon"]:
                group.setdefault("lr", 0.02)
                group.setdefault("momentum", 0.95)
                if any(p.dim() < 2 for p in group["params"]):
                    raise ValueError("Muon groups take only parameters with two or more dimensions")
            else:
                group.setdefault("lr", 3e-4)
                group.setdefault("betas", ADAM_BETAS)
                group.setdefault("eps", ADAM_EPSILON)
        super().__init__(param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group, params in groups_with_gradients(self):
            (self._muon_step if group["use_muon"] else self._adam_step)(group, params)
        return loss

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        for p in params:
            if not self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        buffers = [self.state[p]["momentum_buffer"] for p in params]
        grads = [p.grad for p in params]
        torch._foreach_lerp_(buffers, grads, 1.0 - momentum)
        updates = torch._foreach_lerp(grads, buffers, momentum)
        torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        for p, u in zip(params, updates):
            update = orthogonalize(u)
            update *= shape_scale(p.shape)  # in bfloat16, as the reference scales its update (muon.py line 40)
            p.add_(update, alpha=-lr)

    def _adam_step(self, group: dict, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        states = [self.state[p] for p in params]
        lr, (beta1, beta2), t = group["lr"], group["betas"], states[0]["step"]
        grads = [p.grad for p in params]
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - beta2)
        # The reference's order of operations (muon.py lines 130-135): the AdamW parameters feed the
        # gradients that the bfloat16 Newton-Schulz iteration rounds, so rounding here is kept the same.
        updates = torch._foreach_div(exp_avgs, 1.0 - beta1**t)
        denominators = torch._foreach_div(exp_avg_sqs, 1.0 - beta2**t)
        torch._foreach_sqrt_(denominators)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_div_(updates, denominators)
        torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        torch._foreach_add_(params, updates, alpha=-lr)


def hidden_matrix_names(model: torch.nn.Module, workload: spec.Workload) -> set[str]:
    """The names of the parameters that Muon updates (`is_hidden_matrix`)."""
    types = workload.model_params_types
    return {name for name, p in model.named_parameters()
            if is_hidden_matrix(p.dim(), types[name], workload.is_output_params(name))}


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    hidden = hidden_matrix_names(model, workload)
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in hidden], "use_muon": True,
         "lr": hp.learning_rate, "momentum": 1.0 - hp.one_minus_momentum, "weight_decay": hp.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in hidden], "use_muon": False,
         "lr": hp.adam_learning_rate, "weight_decay": hp.adam_weight_decay},
    ]
    optimizer = Muon([g for g in groups if g["params"]])
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

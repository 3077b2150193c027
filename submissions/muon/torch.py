"""Muon, "MomentUm Orthogonalized by Newton-Schulz" (Jordan et al., 2024, kellerjordan.github.io/posts/muon;
KellerJordan/Muon): Nesterov momentum whose update for each hidden weight matrix is replaced by an
approximate orthogonalisation; AdamW for every other parameter. Linear warmup and cosine decay to 0
at step_hint scale both learning rates.

    python submit.py --workload kjv_lm --submission muon

Hidden weights are the parameters with two or more dimensions that are neither embeddings nor the
output layer; convolution kernels are viewed as (out, in·k_h·k_w) matrices, as the reference
suggests for hidden convolutions.
"""

from __future__ import annotations

import math

import torch

from harness import spec
from submissions.torch_foreach import evaluate_closure, groups_with_gradients
from submissions.torch_schedules import warmup_cosine_decay

NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # (a, b, c) of the reference's quintic iteration
NEWTON_SCHULZ_STEPS = 5  # reference default
NEWTON_SCHULZ_DTYPE = torch.bfloat16  # the reference runs the iteration in bfloat16
ADAM_BETAS = (0.9, 0.95)  # reference MuonWithAuxAdam defaults for the AdamW groups
ADAM_EPSILON = 1e-10

# Self-tuning ruleset: the reference's defaults (Muon lr 0.02, momentum 0.95, weight decay 0; AdamW lr 3e-4,
# weight decay 0); warmup 5% as in AlgoPerf's AdamW search space.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 0.02, "one_minus_momentum": 0.05, "weight_decay": 0.0, "adam_learning_rate": 3e-4,
    "adam_weight_decay": 0.0, "warmup_factor": 0.05,
})


def orthogonalize(update: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS, dtype: torch.dtype = NEWTON_SCHULZ_DTYPE):
    r"""Approximate U Vᵀ of the matrix G = U S Vᵀ with the quintic Newton-Schulz iteration:

        X ← G / (‖G‖_F + 1e-7)   (transposed when G has more rows than columns)
        repeat `steps` times:  A = X Xᵀ,  B = b A + c A²,  X ← a X + B X

    The result has singular values roughly in [0.7, 1.2] rather than exactly 1, which the reference
    found not to hurt. Returned in `dtype`, shaped like `update`.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    matrix = update.reshape(update.shape[0], -1)
    transpose = matrix.shape[0] > matrix.shape[1]
    x = (matrix.mT if transpose else matrix).to(dtype)
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, polynomial, x, beta=a)
    return (x.mT if transpose else x).reshape(update.shape)


class Muon(torch.optim.Optimizer):
    r"""Muon for parameter groups with `use_muon=True`, AdamW for the others.

    Muon groups, with momentum μ, learning rate η and weight decay λ, for a parameter of shape
    (rows, ...) viewed as a (rows, cols) matrix:
        b ← μ b + (1 − μ) g,   u = (1 − μ) g + μ b   (Nesterov)
        θ ← θ (1 − η λ) − η √max(1, rows/cols) · orthogonalize(u)
    AdamW groups: Adam with bias correction and decoupled weight decay,
        θ ← θ (1 − η λ) − η (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
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
            scale = math.sqrt(max(1.0, p.shape[0] / (p.numel() // p.shape[0])))
            p.add_(orthogonalize(u), alpha=-lr * scale)

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
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, math.sqrt(1.0 - beta2**t))
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-lr / (1.0 - beta1**t))


def hidden_matrix_names(model: torch.nn.Module, workload: spec.Workload) -> set[str]:
    """Parameters that Muon updates: two or more dimensions, not an embedding, not the output layer."""
    types = workload.model_params_types
    return {
        name for name, p in model.named_parameters()
        if p.dim() >= 2 and types[name] != spec.ParameterType.EMBEDDING and not workload.is_output_params(name)
    }


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

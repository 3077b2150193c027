"""SOAP, "ShampoO with Adam in the Preconditioner's eigenbasis" (Vyas et al., 2025, ICLR,
arXiv:2409.11321; nikhilvyas/SOAP): Adam run in the eigenbasis of Shampoo's preconditioner, with
linear warmup and cosine decay to 0 at step_hint.

    python submit.py --workload kjv_lm --submission soap
"""

from __future__ import annotations

import math
from itertools import chain

import torch

from harness import spec
from harness.backends.torch.schedules import warmup_cosine_decay
from submissions.soap import common
from submissions.soap.common import EIGH_SHIFT, EPSILON, SELF_TUNING_DEFAULTS, preconditioned_dims

DECOMPOSITION_DTYPE = getattr(torch, common.DECOMPOSITION_DTYPE)  # float32, as the official code


def _rotate(x: torch.Tensor, bases: list[torch.Tensor | None], back: bool = False) -> torch.Tensor:
    """Multiply every dimension i of x by Q_iᵀ (into the eigenbasis) or by Q_i (`back`); None leaves a
    dimension as it is. Each tensordot contracts the leading dimension and appends the result last."""
    for q in bases:
        if q is None:
            x = x.permute(*range(1, x.dim()), 0)
        else:
            x = torch.tensordot(x, q, dims=([0], [1 if back else 0]))
    return x


class SOAP(torch.optim.Optimizer):
    r"""SOAP's update (Vyas et al., 2025). For a parameter with k ≥ 2 dimensions, each dimension i of size at
    most MAX_PRECONDITIONER_DIM keeps Shampoo's statistic L_i ← β₂ L_i + (1 − β₂) G_(i) G_(i)ᵀ
    (G_(i): g unfolded along i) and an eigenbasis Q_i. With R(x) = x ×_i Q_iᵀ for every i:

        m ← β₁ m + (1 − β₁) g,    v ← β₂ v + (1 − β₂) R(g)²
        θ ← θ − η √(1 − β₂ˢ)/(1 − β₁ˢ) · R⁻¹( R(m) / (√v + ε) ),   then θ ← θ (1 − η λ)

    then L_i is updated with g, and every f steps Q_i is refreshed by one power iteration and a QR
    decomposition, Q_i ← QR(L_i Q_i) with the columns sorted by their eigenvalue estimates
    diag(Q_iᵀ L_i Q_i) and v permuted to match. The first step only initialises L_i (Q_i from an
    eigendecomposition) and leaves θ unchanged; s counts the steps after it. One-dimensional
    parameters get Adam (R = identity). m is kept in the original basis; the official code keeps R(m)
    and rotates it when Q changes, which is the same up to rounding.

    Precision: eigh and QR run in float32 whatever the parameter's dtype, as in the official code, and
    L_i, Q_i and the rotations are kept in float32 as there; m and v in the parameter's dtype, as there.
    The official code runs only on float32 parameters (its float32 L_i reject other gradients); here
    bfloat16 and float16 parameters work (torch has no eigh or QR for them on the CPU), and float64
    ones keep L_i, Q_i and the rotations in float64 around float32 decompositions.
    """

    def __init__(self, params, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95), eps: float = EPSILON,
                 weight_decay: float = 0.01, precondition_frequency: int = 10):
        if lr < 0 or eps < 0 or weight_decay < 0 or precondition_frequency < 1 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"invalid SOAP hyperparameters: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}, "
                f"precondition_frequency={precondition_frequency}"
            )
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "precondition_frequency": precondition_frequency}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    self._initialise(state, p.grad, group["betas"][1])
                    continue
                self._update(p, state, group)
        return loss

    @staticmethod
    def _initialise(state: dict, grad: torch.Tensor, shampoo_beta: float) -> None:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(grad)
        state["exp_avg_sq"] = torch.zeros_like(grad)
        dims, dtype = preconditioned_dims(grad.shape), SOAP._preconditioner_dtype(grad)
        state["statistics"] = [torch.zeros(n, n, device=grad.device, dtype=dtype) if i in dims else None
                               for i, n in enumerate(grad.shape)]
        SOAP._accumulate(state, grad, shampoo_beta)
        state["bases"] = [None if s is None else SOAP._eigenbasis(s) for s in state["statistics"]]

    @staticmethod
    def _preconditioner_dtype(grad: torch.Tensor) -> torch.dtype:
        """float32, or the gradient's dtype where that is wider (float64)."""
        return torch.promote_types(grad.dtype, DECOMPOSITION_DTYPE)

    @staticmethod
    def _accumulate(state: dict, grad: torch.Tensor, shampoo_beta: float) -> None:
        """L_i ← β L_i + (1 − β) G_(i) G_(i)ᵀ for every preconditioned dimension i."""
        grad = grad.to(SOAP._preconditioner_dtype(grad))
        for i, statistic in enumerate(state["statistics"]):
            if statistic is not None:
                others = [*chain(range(i), range(i + 1, grad.dim()))]
                statistic.lerp_(torch.tensordot(grad, grad, dims=(others, others)), 1.0 - shampoo_beta)

    @staticmethod
    def _eigenbasis(statistic: torch.Tensor) -> torch.Tensor:
        """Eigenvectors of L in descending eigenvalue order: eigh of L + 1e-30 I in float32, flipped, in
        L's dtype (official `get_orthogonal_matrix`, soap.py lines 346-368)."""
        matrix = statistic.to(DECOMPOSITION_DTYPE)
        identity = torch.eye(matrix.shape[0], device=matrix.device, dtype=matrix.dtype)
        eigenvectors = torch.linalg.eigh(matrix + EIGH_SHIFT * identity).eigenvectors
        return torch.flip(eigenvectors, dims=[1]).to(statistic.dtype)

    @staticmethod
    def _refresh_bases(state: dict) -> None:
        """One power iteration and QR per basis, columns sorted by estimated eigenvalue; v follows. The QR
        runs in float32 (official `get_orthogonal_matrix_QR`, soap.py lines 388-421)."""
        exp_avg_sq = state["exp_avg_sq"]
        for i, (statistic, basis) in enumerate(zip(state["statistics"], state["bases"])):
            if statistic is None:
                continue
            product = statistic @ basis
            order = torch.argsort((basis * product).sum(dim=0), descending=True)
            exp_avg_sq = exp_avg_sq.index_select(i, order)
            q, _ = torch.linalg.qr(product.index_select(1, order).to(DECOMPOSITION_DTYPE))
            state["bases"][i] = q.to(basis.dtype)
        state["exp_avg_sq"] = exp_avg_sq

    def _update(self, p: torch.Tensor, state: dict, group: dict) -> None:
        grad, bases = p.grad, state["bases"]
        (beta1, beta2), lr = group["betas"], group["lr"]
        state["step"] += 1
        s = state["step"]
        wide = self._preconditioner_dtype(grad)  # rotations in the bases' dtype; m and v in the parameter's
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.lerp_(_rotate(grad.to(wide), bases).square().to(exp_avg_sq.dtype), 1.0 - beta2)
        denominator = exp_avg_sq.sqrt().add_(group["eps"])
        direction = _rotate(_rotate(exp_avg.to(wide), bases) / denominator, bases, back=True)
        p.add_(direction.to(p.dtype), alpha=-lr * math.sqrt(1.0 - beta2**s) / (1.0 - beta1**s))
        p.mul_(1.0 - lr * group["weight_decay"])
        self._accumulate(state, grad, beta2)
        if s % group["precondition_frequency"] == 0:
            self._refresh_bases(state)


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = SOAP(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2),
        weight_decay=hp.weight_decay, precondition_frequency=hp.precondition_frequency,
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

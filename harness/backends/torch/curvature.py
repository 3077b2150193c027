"""Diagonal curvature estimates and the optimizers built on them, for the full-API PyTorch submissions
`sophia_g`, `sophia_h` and `adahessian`.

Estimators, for a loss L(θ) with gradient g on a mini-batch of B examples (tokens for a sequence model):

    Hutchinson (Hutchinson, 1990):   ĥ = u ⊙ (∇²L u),  u ~ N(0, I) or Rademacher
    Gauss-Newton-Bartlett (Liu et al., 2023, Algorithm 2):
                                     ŷ ~ softmax(f(θ, x)),  ĝ = ∇ (1/B) Σ ℓ(f(θ, x), ŷ),  ĥ = B · ĝ ⊙ ĝ

Probes and sampled labels are drawn from torch's global generator, which the harness seeds per trial.

On several processes (`--num_devices`, DDP) these submissions run the model unwrapped, outside DDP's
gradient hooks (which allow one backward pass per forward pass, and a Hessian-vector product needs more),
take the mean loss over the global batch (`distributed.global_mean`) and average every gradient and
Hessian-vector product over the processes themselves (`average_gradients`), so that each process takes
the same step as one process on the whole batch. Every process draws the same probes (the same seed).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness import spec
from harness.backends.torch import distributed
from harness.backends.torch.foreach import evaluate_closure, groups_with_gradients
from harness.backends.torch.schedules import warmup_cosine_decay

HUTCHINSON_DISTRIBUTIONS = ("gaussian", "rademacher")


def training_logits(
    workload: spec.Workload,
    model: torch.nn.Module,
    model_state: spec.ModelAuxiliaryState,
    batch: dict[str, torch.Tensor],
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> tuple[torch.Tensor, spec.ModelAuxiliaryState]:
    """Forward pass in train mode (BatchNorm statistics updated) with the point's `dropout_rate`,
    as the harness's short form does; under DDP, of the model inside the wrapper (see above)."""
    return workload.model_fn(
        params=distributed.unwrapped(model),
        augmented_and_preprocessed_input_batch=batch,
        model_state=model_state,
        mode=spec.ForwardPassMode.TRAIN,
        rng=rng,
        update_batch_norm=True,
        dropout_rate=getattr(hyperparameters, "dropout_rate", None),
    )


def mean_loss(
    workload: spec.Workload,
    logits: torch.Tensor,
    labels: torch.Tensor,
    batch: dict[str, torch.Tensor],
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | int]:
    """(mean loss, number of valid examples) of `workload.loss_fn` over the global batch (`distributed.global_mean`).
    Called with gradients on, so the harness's divergence check reads the latest such call as the training loss."""
    loss_dict = workload.loss_fn(
        label_batch=labels, logits_batch=logits, mask_batch=batch.get("weights"), label_smoothing=label_smoothing
    )
    return distributed.global_mean(loss_dict["summed"], loss_dict["n_valid_examples"])


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Each `p.grad` averaged over the processes of a multi-device trial (see above); nothing in one process."""
    distributed.average_over_processes([p.grad for p in params if p.grad is not None])


def sampled_labels(workload: spec.Workload, logits: torch.Tensor) -> torch.Tensor:
    """Labels drawn from the model's own predictive distribution, whose negative log-likelihood is the
    workload's loss: the Gauss-Newton-Bartlett estimator's labels (Liu et al., 2023, §2.3).

    softmax cross-entropy: ŷ ~ Categorical(softmax(z)); sigmoid cross-entropy: ŷ ~ Bernoulli(σ(z)) per
    label; mean absolute error (the Laplace log-likelihood with scale 1): ŷ = z + Laplace(0, 1) noise.
    A workload whose outputs or labels have a form of their own (CTC: per-frame softmax paths,
    collapsed) samples them itself through `workload.sample_labels(logits)`.
    """
    if hasattr(workload, "sample_labels"):
        return workload.sample_labels(logits)
    logits = logits.detach()
    if workload.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY:
        return torch.distributions.Categorical(logits=logits).sample()
    if workload.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY:
        return torch.bernoulli(torch.sigmoid(logits))
    if workload.loss_type == spec.LossType.MEAN_ABSOLUTE_ERROR:
        return logits + torch.distributions.Laplace(0.0, 1.0).sample(logits.shape).to(logits)
    raise ValueError(
        f"the Gauss-Newton-Bartlett estimator needs labels sampled from the model; workload {workload.name} has "
        f"loss {workload.loss_type.name}, which has no sampler here: use the Hutchinson estimator (sophia_h)"
    )


def twice_differentiable():
    """A context in which scaled-dot-product attention uses its math kernel: the fused CPU and GPU
    kernels have no double backward, which Hessian-vector products need."""
    return sdpa_kernel(SDPBackend.MATH)


def hutchinson_probes(params: Sequence[torch.Tensor], distribution: str) -> list[torch.Tensor]:
    """One probe z per parameter, drawn in parameter order from the global generator:
    `randint_like(p, 0, 2) * 2 - 1` for Rademacher, `randn_like(p)` for Gaussian."""
    if distribution not in HUTCHINSON_DISTRIBUTIONS:
        raise ValueError(f"unknown probe distribution {distribution!r}; choose one of {HUTCHINSON_DISTRIBUTIONS}")
    if distribution == "rademacher":
        return [torch.randint_like(p, 0, 2) * 2.0 - 1.0 for p in params]
    return [torch.randn_like(p) for p in params]


def hutchinson_diagonal(
    loss: torch.Tensor, params: Sequence[torch.Tensor], distribution: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The gradient g = ∇L and one Hutchinson probe of the Hessian, z ⊙ (∇²L z), for each parameter,
    with z from `hutchinson_probes` (drawn after the gradient).

    Costs one backward pass with `create_graph=True` and one Hessian-vector product.
    """
    grads = torch.autograd.grad(loss, params, create_graph=True)
    probes = hutchinson_probes(params, distribution)
    hessian_probes = list(torch.autograd.grad(grads, params, grad_outputs=probes))
    grads = [g.detach() for g in grads]
    distributed.average_over_processes(grads + hessian_probes)
    return grads, [z * hz for z, hz in zip(probes, hessian_probes)]


def gradients_with_hutchinson(
    workload: spec.Workload, model: torch.nn.Module, model_state, batch: dict[str, torch.Tensor], hp, rng,
    params: Sequence[torch.Tensor], distribution: str,
):
    """Forward on the batch, mean loss, then `hutchinson_diagonal`; sets each `p.grad` to ∇L.

    Returns (new_model_state, z ⊙ (∇²L z) per parameter).
    """
    with twice_differentiable():
        logits, new_model_state = training_logits(workload, model, model_state, batch, hp, rng)
        loss, _ = mean_loss(workload, logits, batch["targets"], batch, hp.label_smoothing)
        grads, estimates = hutchinson_diagonal(loss, params, distribution)
    for p, g in zip(params, grads):
        p.grad = g
    return new_model_state, estimates


def sophia_optimizer_state(workload: spec.Workload, model: torch.nn.Module, hp, eps: float) -> dict:
    """A `Sophia` optimizer from the point's hyperparameters and the baselines' warmup-cosine schedule."""
    optimizer = Sophia(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2), rho=hp.rho,
        weight_decay=hp.weight_decay, eps=eps,
    )
    return {"optimizer": optimizer, "scheduler": warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)}


def spatially_averaged(values: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """AdaHessian's spatial averaging (Yao et al., 2021; official `get_trace`): |v| for tensors of up to two
    dimensions; for convolution kernels (out, in, k_h, k_w), |v| averaged over the k_h x k_w
    positions, broadcast back over them; likewise over the k positions of 1-D kernels (out, in, k)."""
    averaged = []
    for v in values:
        if v.dim() <= 2:
            averaged.append(v.abs())
        elif v.dim() == 3:
            averaged.append(v.abs().mean(dim=2, keepdim=True).expand_as(v))
        elif v.dim() == 4:
            averaged.append(v.abs().mean(dim=(2, 3), keepdim=True).expand_as(v))
        else:
            raise ValueError(f"no spatial averaging rule for a {v.dim()}-D parameter of shape {tuple(v.shape)}")
    return averaged


class Sophia(torch.optim.Optimizer):
    r"""Sophia's update (Liu et al., 2023, Algorithm 3), in the parameterisation of the official code
    (Liuhong99/Sophia, `sophia.py`), where `lr` stands for the paper's ρ·η:

        θ ← θ (1 − lr λ)
        m ← β₁ m + (1 − β₁) g
        h ← β₂ h + (1 − β₂) ĥ          only on steps where a curvature estimate ĥ is given
        θ ← θ − lr · clip(m / max(ρ h, ε), 1)      clip(x, 1) = max(min(x, 1), −1) element-wise

    Call `update_hessian(estimates)` before `step()` on the steps that refresh h (every k steps).
    h starts at 0, so before the first estimate the update is lr · sign(m).
    """

    def __init__(
        self,
        params,
        lr: float,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        eps: float = 1e-15,
    ) -> None:
        if lr < 0 or rho <= 0 or eps <= 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"invalid Sophia hyperparameters: lr={lr}, betas={betas}, rho={rho}, weight_decay={weight_decay}, eps={eps}"
            )
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "rho": rho, "weight_decay": weight_decay, "eps": eps})

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def update_hessian(self, estimates: Sequence[torch.Tensor]) -> None:
        """h ← β₂ h + (1 − β₂) ĥ, with one estimate per parameter in parameter-group order."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(estimates) != len(params):
            raise ValueError(f"expected {len(params)} curvature estimates (one per parameter), got {len(estimates)}")
        index = 0
        for group in self.param_groups:
            beta2 = group["betas"][1]
            hessians = [self._state(p)["hessian"] for p in group["params"]]
            torch._foreach_lerp_(hessians, list(estimates[index : index + len(hessians)]), 1.0 - beta2)
            index += len(hessians)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group, params in groups_with_gradients(self):
            states = [self._state(p) for p in params]
            exp_avgs = [s["exp_avg"] for s in states]
            lr, (beta1, _), rho = group["lr"], group["betas"], group["rho"]
            torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
            torch._foreach_lerp_(exp_avgs, [p.grad for p in params], 1.0 - beta1)
            denominators = torch._foreach_mul([s["hessian"] for s in states], rho)
            torch._foreach_clamp_min_(denominators, group["eps"])
            ratios = torch._foreach_div(exp_avgs, denominators)
            torch._foreach_clamp_min_(ratios, -1.0)
            torch._foreach_clamp_max_(ratios, 1.0)
            torch._foreach_add_(params, ratios, alpha=-lr)
        return loss


class AdaHessian(torch.optim.Optimizer):
    r"""AdaHessian's update (Yao et al., 2021, Algorithm 1; amirgholami/adahessian), with D the
    spatially averaged Hutchinson estimate of the Hessian diagonal passed to `step`:

        m ← β₁ m + (1 − β₁) g,     v ← β₂ v + (1 − β₂) D ⊙ D
        θ ← θ − lr · [ (m / (1 − β₁ᵗ)) / ((√v / √(1 − β₂ᵗ))^k + ε) + λ θ ]

    with Hessian power k and decoupled weight decay λ, as in the official code.
    """

    def __init__(
        self,
        params,
        lr: float = 0.15,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        hessian_power: float = 1.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not 0.0 < hessian_power <= 1.0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"invalid AdaHessian hyperparameters: lr={lr}, betas={betas}, eps={eps}, "
                f"weight_decay={weight_decay}, hessian_power={hessian_power} (must be in (0, 1])"
            )
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "hessian_power": hessian_power}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, hessian_diagonal: Sequence[torch.Tensor]):  # type: ignore[override]
        """One update from `p.grad` and D (one tensor per parameter, in parameter-group order)."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(hessian_diagonal) != len(params):
            raise ValueError(f"expected {len(params)} Hessian-diagonal estimates, got {len(hessian_diagonal)}")
        index = 0
        for group in self.param_groups:
            group_params = group["params"]
            diagonal = list(hessian_diagonal[index : index + len(group_params)])
            index += len(group_params)
            for p in group_params:
                if not self.state[p]:
                    self.state[p]["step"] = 0
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    self.state[p]["exp_hessian_diag_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["step"] += 1
            states = [self.state[p] for p in group_params]
            lr, (beta1, beta2), k, t = group["lr"], group["betas"], group["hessian_power"], states[0]["step"]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_hessians = [s["exp_hessian_diag_sq"] for s in states]
            torch._foreach_lerp_(exp_avgs, [p.grad for p in group_params], 1.0 - beta1)
            torch._foreach_mul_(exp_hessians, beta2)
            torch._foreach_addcmul_(exp_hessians, diagonal, diagonal, value=1.0 - beta2)
            denominators = torch._foreach_div(exp_hessians, 1.0 - beta2**t)
            torch._foreach_pow_(denominators, k / 2.0)
            torch._foreach_add_(denominators, group["eps"])
            torch._foreach_mul_(group_params, 1.0 - lr * group["weight_decay"])
            torch._foreach_addcdiv_(group_params, exp_avgs, denominators, value=-lr / (1.0 - beta1**t))

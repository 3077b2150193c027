"""MeZO (Malladi et al., 2023, NeurIPS, arXiv:2305.17333): zeroth-order SGD with in-place
perturbations, two forward passes per step, no backward pass and no optimizer state.

    python submit.py --workload fashion_mnist --submission mezo --tuning_ruleset self

One step (Algorithm 1), with s the step's seed, z ~ N(0, I) regenerated from s in parameter order:

    θ ← θ + εz;   ℓ₊ = L(θ; B)
    θ ← θ − 2εz;  ℓ₋ = L(θ; B)
    g = (ℓ₊ − ℓ₋) / (2ε)
    θ ← θ + εz, then θ ← θ − η (g z + λ θ)     (λ only on weights, not biases or norm parameters)

The reset and the update share one regeneration of z. As in the official trainer (`zo_forward`),
both losses are taken in evaluation mode: no dropout, BatchNorm normalises with its running
statistics, which MeZO never updates. For the harness's divergence check, `workload.loss_fn` is
called with gradients enabled on the second pass (its logits carry no graph): the recorded
training loss is ℓ₋, within O(ε) of L(θ).
"""

from __future__ import annotations

from typing import Iterator

import torch

from harness import spec
from harness.backends.torch import distributed
from submissions.mezo.common import NO_DECAY, SELF_TUNING_DEFAULTS


def init_optimizer_state(
    workload: spec.Workload, model_params: torch.nn.Module, model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters, rng: spec.RandomState,
) -> dict:
    """MeZO keeps no optimizer state: only which parameters take weight decay."""
    del model_state, hyperparameters, rng
    types = workload.model_params_types
    return {"decay": [types[name] not in NO_DECAY for name, _ in model_params.named_parameters()]}


def _directions(params: list[torch.Tensor], seed: int) -> Iterator[torch.Tensor]:
    """z ~ N(0, I), regenerated from `seed` one parameter at a time, in parameter order."""
    generator = torch.Generator(device=params[0].device).manual_seed(seed)
    return (torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params)


def _perturb(params: list[torch.Tensor], seed: int, scale: float) -> None:
    """θ ← θ + scale · z, with z regenerated from `seed`."""
    for p, z in zip(params, _directions(params, seed)):
        p.add_(z, alpha=scale)


def _loss(workload: spec.Workload, model: torch.nn.Module, model_state, batch: dict, rng) -> float:
    logits, _ = workload.model_fn(model, batch, model_state, spec.ForwardPassMode.EVAL, rng, update_batch_norm=False)
    with torch.enable_grad():  # recorded as the training loss; the logits carry no graph
        loss_dict = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
    return float(distributed.global_mean(loss_dict["summed"], loss_dict["n_valid_examples"])[0])


@torch.no_grad()
def update_params(
    workload: spec.Workload, current_param_container: torch.nn.Module, current_params_types,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters, batch: dict[str, torch.Tensor],
    loss_type: spec.LossType, optimizer_state: dict, eval_results: list, global_step: int, rng: spec.RandomState,
    train_state: dict | None = None,
) -> spec.UpdateReturn:
    """One MeZO step (see the module docstring); the step's seed is the harness's per-step `rng`."""
    del current_params_types, loss_type, eval_results, global_step, train_state
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    model = current_param_container
    params = list(model.parameters())
    seed, epsilon = int(rng), hp.epsilon
    _perturb(params, seed, epsilon)
    loss_plus = _loss(workload, model, model_state, batch, rng)
    _perturb(params, seed, -2.0 * epsilon)
    loss_minus = _loss(workload, model, model_state, batch, rng)
    projected_grad = (loss_plus - loss_minus) / (2.0 * epsilon)
    for p, z, decay in zip(params, _directions(params, seed), optimizer_state["decay"]):
        p.add_(z, alpha=epsilon)
        if decay:
            p.mul_(1.0 - hp.learning_rate * hp.weight_decay)
        p.add_(z, alpha=-hp.learning_rate * projected_grad)
    return optimizer_state, model, model_state

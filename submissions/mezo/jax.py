"""MeZO (Malladi et al., 2023, NeurIPS, arXiv:2305.17333) in JAX: the algorithm of `torch.py`,
zeroth-order SGD from two forward passes per step, with no backward pass and no optimizer state, as
one compiled step.

    python submit.py --framework jax --workload fashion_mnist --submission mezo --tuning_ruleset self

One step (Algorithm 1), with z ~ N(0, I) drawn from the step's key:

    ℓ± = L(θ ± εz; B),   g = (ℓ₊ − ℓ₋) / (2ε),   θ ← θ − η (g z + λ θ)   (λ only where `NO_DECAY` allows)

Both losses are taken in evaluation mode (no dropout, BatchNorm on its running statistics), as in the
official trainer's `zo_forward` and the torch twin; the recorded training loss is ℓ₋. Where torch
perturbs θ in place and regenerates z from a seed three times to hold no copy of it, this step
evaluates the loss at θ ± εz functionally: XLA holds z (one parameter-sized tree) and θ is never
perturbed, so it needs no restoring (torch's +εz −2εz +εz restores it to within rounding).
"""

from __future__ import annotations

import jax

from harness import spec
from harness.backends.jax.curvature import jitted_full_api, random_directions
from submissions.mezo.common import NO_DECAY, SELF_TUNING_DEFAULTS


def build_step(workload: spec.Workload, hyperparameters):
    """(optimizer-state init, step) of MeZO for the workload and the point; the state is empty."""
    hp = hyperparameters
    learning_rate, epsilon, weight_decay = hp.learning_rate, hp.epsilon, hp.weight_decay
    decays = jax.tree_util.tree_map(lambda kind: kind not in NO_DECAY, workload.model_params_types)

    def step(params, model_state, optimizer_state, batch, key, variant):
        del variant  # None: every step is alike
        directions = random_directions(key, params, "gaussian")

        def summed_loss(scale: float):
            shifted = jax.tree_util.tree_map(lambda p, z: p + scale * z, params, directions)
            logits, _ = workload.model_fn(shifted, batch, model_state, spec.ForwardPassMode.EVAL, None,
                                          update_batch_norm=False)
            loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
            return loss["summed"], loss["n_valid_examples"]

        (plus, count), (minus, _) = summed_loss(epsilon), summed_loss(-epsilon)
        projected_grad = (plus - minus) / count / (2.0 * epsilon)
        params = jax.tree_util.tree_map(
            lambda p, z, decay: (p * (1.0 - learning_rate * weight_decay) if decay else p)
            - learning_rate * projected_grad * z, params, directions, decays)
        return params, model_state, optimizer_state, minus, count

    return (lambda params: {}), step


init_optimizer_state, update_params = jitted_full_api(build_step, SELF_TUNING_DEFAULTS)

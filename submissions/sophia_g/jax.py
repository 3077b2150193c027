"""Sophia-G (Liu et al., 2023, arXiv:2305.14342) in JAX: the algorithm of `torch.py` (see its docstring),
a clipped diagonal-Newton update whose curvature is a Gauss-Newton-Bartlett estimate refreshed every
k = 10 steps, as one compiled step (one executable for refresh steps, one for the others).

    python submit.py --framework jax --workload kjv_lm --submission sophia_g

One step: one forward pass in train mode (`jax.vjp`), the gradient of the real loss pulled back
through it; on refresh steps (global_step ≡ 0 mod k) also the gradient ĝ of the mean loss against
labels sampled from the same logits, pulled back through the same forward pass, giving
ĥ = B · ĝ ⊙ ĝ. Both gradients are clipped by global norm, then `scale_by_sophia` steps. Not
`optax.contrib.sophia`: see `harness.backends.jax.curvature.scale_by_sophia`.
"""

from __future__ import annotations

import jax
import optax

from harness import spec
from harness.backends.jax.curvature import clipped, jitted_full_api, mean_loss, sampled_labels, sophia, training_logits
from submissions.sophia_g.common import EPSILON, HESSIAN_INTERVAL, SELF_TUNING_DEFAULTS


def build_step(workload: spec.Workload, hyperparameters):
    """(optimizer-state init, step) of Sophia-G for the workload and the point; the step's static
    `refresh` says whether it refreshes h."""
    hp = hyperparameters
    transformation = sophia(workload, hp, EPSILON)

    def step(params, model_state, optax_state, batch, key, refresh: bool):
        dropout_key, label_key = jax.random.split(key)
        logits, pullback, new_model_state = jax.vjp(
            lambda p: training_logits(workload, p, model_state, batch, hp, dropout_key), params, has_aux=True)

        def clipped_gradient(labels, label_smoothing: float = 0.0):
            """(∇θ of the mean loss against `labels` through the step's forward pass, clipped; summed loss; count)."""
            (_, (summed, count)), logits_gradient = jax.value_and_grad(
                lambda z: mean_loss(workload, z, labels, batch, label_smoothing), has_aux=True)(logits)
            return clipped(pullback(logits_gradient)[0], hp.grad_clip), summed, count

        grads, summed, count = clipped_gradient(batch["targets"], hp.label_smoothing)
        estimates = None
        if refresh:
            sampled_grads, _, batch_size = clipped_gradient(sampled_labels(workload, logits, label_key))
            estimates = jax.tree_util.tree_map(lambda g: batch_size * g * g, sampled_grads)
        updates, optax_state = transformation.update(grads, optax_state, params, curvature=estimates)
        return optax.apply_updates(params, updates), new_model_state, optax_state, summed, count

    return transformation.init, step


init_optimizer_state, update_params = jitted_full_api(build_step, SELF_TUNING_DEFAULTS,
                                                      variant=lambda global_step: global_step % HESSIAN_INTERVAL == 0)

"""Sophia-H (Liu et al., 2023, arXiv:2305.14342) in JAX: the algorithm of `torch.py` (see its docstring
for how it differs from the official SophiaH), Sophia's clipped diagonal-Newton update with a
Hutchinson estimate ĥ = u ⊙ (∇²L u), u ~ N(0, I), refreshed every k = 10 steps, as one compiled step
(one executable for refresh steps, one for the others).

    python submit.py --framework jax --workload kjv_lm --submission sophia_h

On refresh steps (global_step ≡ 0 mod k) one forward-over-reverse pass gives the gradient and ∇²L u
together; other steps take the gradient only. The gradient is clipped by global norm, then
`scale_by_sophia` steps. Not `optax.contrib.sophia` (whose default estimator is this one, with
Rademacher probes): see `harness.backends.jax.curvature.scale_by_sophia`.
"""

from __future__ import annotations

import jax
import optax

from harness import spec
from harness.backends.jax.curvature import clipped, hutchinson_diagonal, jitted_full_api, sophia, training_loss
from submissions.sophia_h.common import EPSILON, HESSIAN_INTERVAL, PROBES, SELF_TUNING_DEFAULTS


def build_step(workload: spec.Workload, hyperparameters):
    """(optimizer-state init, step) of Sophia-H for the workload and the point; the step's static
    `refresh` says whether it refreshes h."""
    hp = hyperparameters
    transformation = sophia(workload, hp, EPSILON)

    def step(params, model_state, optax_state, batch, key, refresh: bool):
        dropout_key, probe_key = jax.random.split(key)
        loss = training_loss(workload, model_state, batch, hp, dropout_key)
        if refresh:
            grads, estimates, (new_model_state, summed, count) = hutchinson_diagonal(loss, params, probe_key, PROBES)
        else:
            grads, (new_model_state, summed, count) = jax.grad(loss, has_aux=True)(params)
            estimates = None
        updates, optax_state = transformation.update(clipped(grads, hp.grad_clip), optax_state, params,
                                                     curvature=estimates)
        return optax.apply_updates(params, updates), new_model_state, optax_state, summed, count

    return transformation.init, step


init_optimizer_state, update_params = jitted_full_api(build_step, SELF_TUNING_DEFAULTS,
                                                      variant=lambda global_step: global_step % HESSIAN_INTERVAL == 0)

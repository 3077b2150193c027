"""AdaHessian (Yao et al., 2021, AAAI, arXiv:2006.00719) in JAX: the algorithm of `torch.py`, Adam with
the squared gradient replaced by a spatially averaged Hutchinson estimate of the Hessian diagonal,
drawn with Rademacher probes at every step, as one compiled step.

    python submit.py --framework jax --workload fashion_mnist --submission adahessian

One step: one forward-over-reverse pass gives the gradient g and ∇²L z for a Rademacher probe z;
D = spatial average of |z ⊙ ∇²L z| (per kernel position set for convolutions, Flax's layout), then
`harness.backends.jax.curvature.scale_by_adahessian` steps (optax has no AdaHessian).
"""

from __future__ import annotations

import jax
import optax

from harness import spec
from harness.backends.jax.curvature import (adahessian, hutchinson_diagonal, jitted_full_api, spatially_averaged,
                                            training_loss)
from submissions.adahessian.common import EPSILON, PROBES, SELF_TUNING_DEFAULTS


def build_step(workload: spec.Workload, hyperparameters):
    """(optimizer-state init, step) of AdaHessian for the workload and the point."""
    hp = hyperparameters
    transformation = adahessian(workload, hp, EPSILON)

    def step(params, model_state, optax_state, batch, key, variant):
        del variant  # None: every step is alike
        dropout_key, probe_key = jax.random.split(key)
        loss = training_loss(workload, model_state, batch, hp, dropout_key)
        grads, estimates, (new_model_state, summed, count) = hutchinson_diagonal(loss, params, probe_key, PROBES)
        updates, optax_state = transformation.update(grads, optax_state, params,
                                                     hessian_diagonal=spatially_averaged(estimates))
        return optax.apply_updates(params, updates), new_model_state, optax_state, summed, count

    return transformation.init, step


init_optimizer_state, update_params = jitted_full_api(build_step, SELF_TUNING_DEFAULTS)

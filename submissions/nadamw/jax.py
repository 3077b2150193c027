"""NAdamW with linear warmup and cosine decay: AlgoPerf's baseline (Dahl et al., 2023, arXiv:2306.07179),
in JAX. The same update as `torch.py`, written as an optax transformation: optax's own `nadamw`
corrects the momentum term's bias with 1 − β₁^(t+1) (Dozat's NAdam) where AlgoPerf's baseline uses
1 − β₁^t, so it is not this algorithm.

    python submit.py --framework jax --workload fashion_mnist --submission nadamw
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from harness import spec
from harness.backends.jax.schedules import warmup_cosine_decay
from submissions.nadamw.common import EPSILON, SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


class NadamwState(NamedTuple):
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_nadamw(b1: float, b2: float, eps: float = EPSILON) -> optax.GradientTransformation:
    r"""With gradient g and step t = 1, 2, ...:
        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        u = (b1 m + (1 - b1) g) / (1 - b1^t) / (\sqrt{v / (1 - b2^t)} + eps)
    """

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return NadamwState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        c1, c2 = 1 - b1 ** t.astype(jnp.float32), jnp.sqrt(1 - b2 ** t.astype(jnp.float32))
        updates = jax.tree_util.tree_map(
            lambda m, v, g: (b1 * m + (1 - b1) * g) / c1 / (jnp.sqrt(v) / c2 + eps), mu, nu, grads)
        return updates, NadamwState(t, mu, nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    """θ <- θ − η_t (u + λ θ): decoupled weight decay, scaled by the scheduled rate as in `torch.py`."""
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return optax.chain(
        scale_by_nadamw(1.0 - hp.one_minus_beta1, hp.beta2),
        optax.add_decayed_weights(hp.weight_decay),
        optax.scale_by_learning_rate(warmup_cosine_decay(hp.learning_rate, workload.step_hint, hp.warmup_factor)),
    )

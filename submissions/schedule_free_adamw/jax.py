"""Schedule-free AdamW (Defazio et al., 2024, arXiv:2405.15682; winner of AlgoPerf v0.5's self-tuning
track) in JAX: the update of `schedulefree.AdamWScheduleFree` (`torch.py`) as an optax transformation,
with the evaluation at x and BatchNorm refresh of `harness/backends/jax/averaging.py`. No
learning-rate schedule besides linear warmup.

`optax.contrib.schedule_free_adamw` is not this algorithm: it has no polynomial weighting r (the
authors' self-tuning submission uses r = 0.75), and during warmup its AdamW step takes the rate of
the step before (its schedule counts from 0: the first step does not move z) where the package takes
γ_k in both the step and the average's weight. Without warmup and with r = 0 the two agree.

    python submit.py --framework jax --workload fashion_mnist --submission schedule_free_adamw
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from harness import spec
from harness.backends.jax.averaging import schedule_free_functions
from submissions.schedule_free_adamw.common import EPSILON, SELF_TUNING_DEFAULTS, WEIGHT_LR_POWER, warmup_steps


class ScheduleFreeAdamWState(NamedTuple):
    b1: jax.Array  # b1 and z as in optax.contrib.ScheduleFreeState: schedule_free_eval_params reads them
    z: optax.Params
    nu: optax.Updates
    count: jax.Array  # k, the steps taken
    lr_max: jax.Array
    weight_sum: jax.Array


def schedule_free_adamw(learning_rate: float, b1: float, b2: float, eps: float, weight_decay: float,
                        warmup_steps: int, r: float, weight_lr_power: float) -> optax.GradientTransformation:
    r"""The update of `schedulefree.AdamWScheduleFree` on y (the parameters), at step k = 0, 1, ...:

        γ_k = lr · min(1, (k + 1)/W),   w_k = (k + 1)^r · (max_{i≤k} γ_i)^p,   c = w_k / Σ_{i≤k} w_i  (0 if 0/0)
        v ← b2 v + (1 − b2) g²,   u = g / (√(v / (1 − b2^{k+1})) + ε) + λ y
        z ← z − γ_k u,   x ← (1 − c) x + c z,   y = b1 x + (1 − b1) z

    with y updated in place as the package does: y ← y + c (z − y) + γ_k (b1 (1 − c) − 1) u (z before its step).
    """

    def init(params):
        zero = jnp.zeros([], jnp.float32)
        return ScheduleFreeAdamWState(jnp.asarray(b1, jnp.float32), params,
                                      jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros([], jnp.int32),
                                      zero, zero)

    def update(grads, state, params):
        k1 = (state.count + 1).astype(jnp.float32)
        lr = learning_rate * jnp.minimum(1.0, k1 / max(warmup_steps, 1))
        lr_max = jnp.maximum(state.lr_max, lr)
        weight = k1**r * lr_max**weight_lr_power
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum > 0, weight / weight_sum, 0.0)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        correction = 1 - b2**k1
        u = jax.tree_util.tree_map(lambda g, v, y: g / (jnp.sqrt(v / correction) + eps) + weight_decay * y,
                                   grads, nu, params)
        updates = jax.tree_util.tree_map(lambda y, z, u: c * (z - y) + lr * (b1 * (1 - c) - 1) * u,
                                         params, state.z, u)
        z = jax.tree_util.tree_map(lambda z, u: z - lr * u, state.z, u)
        return updates, ScheduleFreeAdamWState(state.b1, z, nu, state.count + 1, lr_max, weight_sum)

    return optax.GradientTransformation(init, update)


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return schedule_free_adamw(hp.learning_rate, 1.0 - hp.one_minus_beta1, hp.beta2, EPSILON, hp.weight_decay,
                               warmup_steps(hp, workload.step_hint), hp.r, WEIGHT_LR_POWER)


_functions = schedule_free_functions(make_optimizer, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
data_selection = _functions["data_selection"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

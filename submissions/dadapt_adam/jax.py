"""D-Adaptation Adam (Defazio & Mishchenko, 2023, ICML, arXiv:2301.07733) with AlgoPerf's AdamW schedule,
in JAX: the update of `torch.py`'s `dadaptation.DAdaptAdam` (v3.2 with `decouple=True` and its other
defaults: no bias correction, growth rate ∞), written as an optax transformation.

    python submit.py --framework jax --workload kjv_lm --submission dadapt_adam --tuning_ruleset self

`optax.contrib.dadapt_adamw` is not this algorithm: it always applies Adam's bias correction
√(1 − β₂ᵗ)/(1 − β₁ᵗ) to the step (≈ 0.32 at t = 1 with β = (0.9, 0.999); DAdaptAdam's default leaves it
off), and at a zero scheduled rate, the first warmup step, its estimate of d is 0/0 = NaN, where
DAdaptAdam skips the step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from harness import spec
from harness.backends.jax.conditional_step import step_if
from harness.backends.jax.schedules import warmup_cosine_decay
from submissions.dadapt_adam.common import D0, EPSILON, LEARNING_RATE, SELF_TUNING_DEFAULTS


class DAdaptAdamState(NamedTuple):
    count: jax.Array  # calls so far: the schedule's step
    d: jax.Array  # the step size estimate
    numerator: jax.Array  # DAdaptAdam's numerator_weighted
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    s: optax.Updates


def scale_by_dadapt_adam(learning_rate: optax.Schedule, b1: float, b2: float, weight_decay: float,
                         eps: float = EPSILON, d0: float = D0) -> optax.GradientTransformation:
    r"""The whole D-Adaptation Adam step (the scheduled rate is inside it). With η_t the schedule,
    β₃ = √β₂, d the estimate and g the gradient:

        N ← β₃ N + (1 − β₃) d η_t ⟨g, s / (√v + ε)⟩          (s and v before this step)
        m ← β₁ m + (1 − β₁) d η_t g,    v ← β₂ v + (1 − β₂) g²,    s ← β₃ s + (1 − β₃) d η_t g
        d' = max(d, N / ((1 − β₃) ‖s‖₁))
        θ ← θ − d η_t λ θ − m / (√v + ε)

    A step with η_t = 0 (or ‖s‖₁ = 0) changes neither θ nor the state, as in DAdaptAdam. ⟨·,·⟩ sums
    elementwise float32 products (not a dot product, which a GPU may run in TF32).
    """
    beta3 = b2 ** 0.5

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return DAdaptAdamState(jnp.zeros([], jnp.int32), jnp.asarray(d0, jnp.float32), jnp.zeros([], jnp.float32),
                               zeros, zeros, zeros)

    def update(grads, state, params):
        lr = learning_rate(state.count)
        dlr = state.d * lr
        weighted_s = jax.tree_util.tree_map(lambda s, v: s / (jnp.sqrt(v) + eps), state.s, state.exp_avg_sq)
        numerator = beta3 * state.numerator + (1 - beta3) * dlr * optax.tree.sum(optax.tree.mul(grads, weighted_s))
        exp_avg = jax.tree_util.tree_map(lambda m, g: b1 * m + dlr * (1 - b1) * g, state.exp_avg, grads)
        exp_avg_sq = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, grads)
        s = jax.tree_util.tree_map(lambda s, g: beta3 * s + dlr * (1 - beta3) * g, state.s, grads)
        s_norm = optax.tree.norm(s, ord=1)
        d = jnp.maximum(state.d, numerator / ((1 - beta3) * s_norm))
        updates = jax.tree_util.tree_map(
            lambda m, v, p: -dlr * weight_decay * p - m / (jnp.sqrt(v) + eps), exp_avg, exp_avg_sq, params)
        stepped = DAdaptAdamState(state.count + 1, d, numerator, exp_avg, exp_avg_sq, s)
        skipped = state._replace(count=state.count + 1)
        return step_if((lr > 0) & (s_norm > 0), updates, stepped, skipped)

    return optax.GradientTransformation(init, update)


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return scale_by_dadapt_adam(warmup_cosine_decay(LEARNING_RATE, workload.step_hint, hp.warmup_factor),
                                1.0 - hp.one_minus_beta1, hp.beta2, hp.weight_decay)

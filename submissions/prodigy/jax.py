"""Prodigy (Mishchenko & Defazio, 2024, ICML, arXiv:2306.06101) with cosine annealing to zero at step_hint,
in JAX: the update of `torch.py`'s `prodigyopt.Prodigy` (v1.1.2, its defaults: no bias correction,
decoupled weight decay, growth rate ∞), written as an optax transformation.

    python submit.py --framework jax --workload fashion_mnist --submission prodigy --tuning_ruleset self

`optax.contrib.prodigy` is not this algorithm: it always applies Adam's bias correction
√(1 − β₂ᵗ)/(1 − β₁ᵗ) to the step (≈ 0.32 at t = 1 with β = (0.9, 0.999)), which prodigyopt's default
leaves off; through dηₜ in s and N, d then grows so much more slowly that the twin test's 25 steps move θ
2,000 times less. At a zero scheduled rate, the first warmup step, it updates its moments (with
`safeguard_warmup`) or makes d NaN (0/0, without), where prodigyopt skips the step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from harness import spec
from harness.backends.jax.conditional_step import step_if
from harness.backends.jax.schedules import warmup_cosine_decay
from submissions.prodigy.common import D0, EPSILON, LEARNING_RATE, SELF_TUNING_DEFAULTS, uses_safeguard_warmup


class ProdigyState(NamedTuple):
    count: jax.Array  # calls so far: the schedule's step
    d: jax.Array  # the step size estimate (prodigyopt's d, = its d_max at growth rate ∞)
    numerator: jax.Array  # prodigyopt's d_numerator
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    s: optax.Updates
    initial_params: optax.Params


def scale_by_prodigy(learning_rate: optax.Schedule, b1: float, b2: float, weight_decay: float, d_coef: float,
                     safeguard_warmup: bool, eps: float = EPSILON, d0: float = D0) -> optax.GradientTransformation:
    r"""The whole Prodigy step (the scheduled rate is inside it). With η_t the schedule, β₃ = √β₂, d the
    estimate, r = d/d₀ and g the gradient:

        m ← β₁ m + (1 − β₁) d g,    v ← β₂ v + (1 − β₂) d² g²
        s ← β₃ s + r·(d if safeguard_warmup else d η_t)·g,    N ← β₃ N + r d η_t ⟨g, θ₀ − θ⟩
        d' = max(d, d_coef N / ‖s‖₁)
        θ ← θ − d η_t λ θ − d η_t m / (√v + d' ε)

    A step with η_t = 0 (or ‖s‖₁ = 0) changes neither θ nor the state, as in prodigyopt.

    Rounding as prodigyopt's: θ takes the decay, rounded, then the step (`updates` is the difference), and
    ⟨·,·⟩ sums elementwise float32 products (not a dot product, which a GPU may run in TF32). While d is
    small, ⟨g, θ₀ − θ⟩ reads differences of a few ulps of θ, and rounding θ otherwise moves d by percents.
    """
    beta3 = b2 ** 0.5

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return ProdigyState(jnp.zeros([], jnp.int32), jnp.asarray(d0, jnp.float32), jnp.zeros([], jnp.float32),
                            zeros, zeros, zeros, params)

    def update(grads, state, params):
        lr, d = learning_rate(state.count), state.d
        dlr, ratio = d * lr, d / d0
        distance = optax.tree.sum(optax.tree.mul(grads, optax.tree.sub(state.initial_params, params)))
        numerator = beta3 * state.numerator + ratio * dlr * distance
        exp_avg = jax.tree_util.tree_map(lambda m, g: b1 * m + d * (1 - b1) * g, state.exp_avg, grads)
        exp_avg_sq = jax.tree_util.tree_map(lambda v, g: b2 * v + d * d * (1 - b2) * g * g, state.exp_avg_sq, grads)
        s_scale = ratio * (d if safeguard_warmup else dlr)
        s = jax.tree_util.tree_map(lambda s, g: beta3 * s + s_scale * g, state.s, grads)
        denominator = optax.tree.norm(s, ord=1)
        new_d = jnp.maximum(d, d_coef * numerator / denominator)
        updates = jax.tree_util.tree_map(
            lambda m, v, p: (p + -dlr * weight_decay * p) + -dlr * (m / (jnp.sqrt(v) + new_d * eps)) - p,
            exp_avg, exp_avg_sq, params)
        stepped = ProdigyState(state.count + 1, new_d, numerator, exp_avg, exp_avg_sq, s, state.initial_params)
        skipped = state._replace(count=state.count + 1)
        return step_if((lr > 0) & (denominator > 0), updates, stepped, skipped)

    return optax.GradientTransformation(init, update)


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return scale_by_prodigy(warmup_cosine_decay(LEARNING_RATE, workload.step_hint, hp.warmup_factor),
                            1.0 - hp.one_minus_beta1, hp.beta2, hp.weight_decay, hp.d_coef, uses_safeguard_warmup(hp))

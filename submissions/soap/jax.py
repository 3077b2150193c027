"""SOAP (Vyas et al., 2025, ICLR, arXiv:2409.11321; nikhilvyas/SOAP) in JAX: the update of `torch.py`
(Adam in the eigenbasis of Shampoo's preconditioner), with linear warmup and cosine decay to 0 at
step_hint, written as an optax transformation. optax has no SOAP.

    python submit.py --framework jax --workload kjv_lm --submission soap

SOAP rotates each dimension of a parameter by its own basis, so the result does not depend on the order
of the dimensions: a Flax kernel (in, out) gets the bases torch's weight (out, in) gets, in the other order.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from harness import spec
from harness.backends.jax.schedules import warmup_cosine_decay
from submissions.soap.common import (DECOMPOSITION_DTYPE, EIGH_SHIFT, EPSILON, SELF_TUNING_DEFAULTS,
                                     preconditioned_dims)

_HIGHEST = lax.Precision.HIGHEST  # float32 products as torch's (no TF32 or bfloat16 passes on a GPU)


class SoapState(NamedTuple):
    count: jax.Array  # calls so far; the first only initialises the statistics
    exp_avg: optax.Updates  # m, in the original basis
    exp_avg_sq: optax.Updates  # v, in the eigenbasis
    statistics: Any  # per parameter, a tuple of L_i, one per dimension in `preconditioned_dims`
    bases: Any  # per parameter, a tuple of Q_i, likewise


def _wide(dtype) -> jnp.dtype:
    """The dtype of L_i, Q_i and the rotations: float32, or the parameter's where that is wider."""
    return jnp.promote_types(dtype, DECOMPOSITION_DTYPE)


def _rotate(x: jax.Array, dims: list[int], bases: tuple, back: bool = False) -> jax.Array:
    """x ×_i Q_iᵀ (into the eigenbasis) or x ×_i Q_i (`back`) for every preconditioned dimension i. Each
    step contracts the leading dimension and appends the result last, so x returns to its order."""
    by_dim = dict(zip(dims, bases))
    for i in range(x.ndim):
        if i in by_dim:
            x = jnp.tensordot(x, by_dim[i], axes=([0], [1 if back else 0]), precision=_HIGHEST)
        else:
            x = jnp.moveaxis(x, 0, -1)
    return x


def _gram(grad: jax.Array, i: int) -> jax.Array:
    """G_(i) G_(i)ᵀ: the gradient unfolded along dimension i, times its transpose."""
    others = [j for j in range(grad.ndim) if j != i]
    return jnp.tensordot(grad, grad, axes=(others, others), precision=_HIGHEST)


def _eigenbasis(statistic: jax.Array) -> jax.Array:
    """Eigenvectors of L in descending eigenvalue order: eigh of L + 1e-30 I in float32 (its lower
    triangle, as torch's), flipped, in L's dtype."""
    matrix = statistic.astype(DECOMPOSITION_DTYPE)
    _, eigenvectors = jnp.linalg.eigh(matrix + EIGH_SHIFT * jnp.eye(len(matrix), dtype=matrix.dtype),
                                      symmetrize_input=False)
    return jnp.flip(eigenvectors, axis=1).astype(statistic.dtype)


def _refreshed(statistics: tuple, bases: tuple, exp_avg_sq: jax.Array, dims: list[int]) -> tuple[tuple, jax.Array]:
    """One power iteration and a float32 QR per basis, Q_i ← QR(L_i Q_i), the columns sorted by the
    eigenvalue estimates diag(Q_iᵀ L_i Q_i), descending; v permuted along i to match."""
    refreshed = []
    for i, statistic, basis in zip(dims, statistics, bases):
        product = jnp.matmul(statistic, basis, precision=_HIGHEST)
        order = jnp.argsort(-jnp.sum(basis * product, axis=0))
        exp_avg_sq = jnp.take(exp_avg_sq, order, axis=i)
        q, _ = jnp.linalg.qr(product[:, order].astype(DECOMPOSITION_DTYPE))
        refreshed.append(q.astype(basis.dtype))
    return tuple(refreshed), exp_avg_sq


def scale_by_soap(learning_rate: optax.Schedule, b1: float, b2: float, weight_decay: float,
                  precondition_frequency: int, eps: float = EPSILON) -> optax.GradientTransformation:
    r"""The whole SOAP step (the scheduled rate η is inside it), as `torch.py`'s `SOAP`. With R(x) = x ×_i Q_iᵀ
    and s the steps after the first:

        m ← β₁ m + (1 − β₁) g,    v ← β₂ v + (1 − β₂) R(g)²
        θ ← (θ − η √(1 − β₂ˢ)/(1 − β₁ˢ) · R⁻¹(R(m) / (√v + ε))) (1 − η λ)
        L_i ← β₂ L_i + (1 − β₂) G_(i) G_(i)ᵀ,   and every f steps Q_i ← QR(L_i Q_i) (`_refreshed`)

    The first step only sets L_i = (1 − β₂) G_(i) G_(i)ᵀ and Q_i to its eigenvectors, and leaves θ as it is.
    Vectors get Adam (R = identity). m and v are kept in the parameter's dtype; L_i, Q_i and the rotations in
    `_wide`'s; eigh and QR run in float32.
    """

    def init(params):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        statistics = [tuple(jnp.zeros((p.shape[i],) * 2, _wide(p.dtype)) for i in preconditioned_dims(p.shape))
                      for p in leaves]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return SoapState(jnp.zeros([], jnp.int32), zeros, zeros, treedef.unflatten(statistics),
                         treedef.unflatten(statistics))

    def first(grads, state, params):
        leaves, treedef = jax.tree_util.tree_flatten(grads)
        statistics = [tuple((1 - b2) * _gram(g.astype(_wide(g.dtype)), i) for i in preconditioned_dims(g.shape))
                      for g in leaves]
        bases = [tuple(_eigenbasis(statistic) for statistic in per_parameter) for per_parameter in statistics]
        state = state._replace(count=state.count + 1, statistics=treedef.unflatten(statistics),
                               bases=treedef.unflatten(bases))
        return jax.tree_util.tree_map(jnp.zeros_like, params), state

    def later(grads, state, params, refresh: bool):
        lr, s = learning_rate(state.count), state.count.astype(jnp.float32)
        step_size = lr * jnp.sqrt(1 - b2 ** s) / (1 - b1 ** s)
        leaves, treedef = jax.tree_util.tree_flatten(grads)
        columns = (leaves, treedef.flatten_up_to(params), treedef.flatten_up_to(state.exp_avg),
                   treedef.flatten_up_to(state.exp_avg_sq), treedef.flatten_up_to(state.statistics),
                   treedef.flatten_up_to(state.bases))
        rows = []
        for g, p, m, v, statistics, bases in zip(*columns):
            dims, wide = preconditioned_dims(g.shape), _wide(g.dtype)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * jnp.square(_rotate(g.astype(wide), dims, bases)).astype(v.dtype)
            direction = _rotate(_rotate(m.astype(wide), dims, bases) / (jnp.sqrt(v) + eps), dims, bases, back=True)
            update = (p - step_size * direction.astype(p.dtype)) * (1 - lr * weight_decay) - p
            statistics = tuple(b2 * L + (1 - b2) * _gram(g.astype(wide), i) for i, L in zip(dims, statistics))
            if refresh:
                bases, v = _refreshed(statistics, bases, v, dims)
            rows.append((update, m, v, statistics, bases))
        updates, exp_avg, exp_avg_sq, statistics, bases = (treedef.unflatten(column) for column in zip(*rows))
        return updates, SoapState(state.count + 1, exp_avg, exp_avg_sq, statistics, bases)

    def update(grads, state, params):
        """One conditional per step (XLA on a GPU may fetch each branch index to the host): the first
        step, a plain one, or one that refreshes the bases."""
        branch = jnp.where(state.count == 0, 0, jnp.where(state.count % precondition_frequency == 0, 2, 1))
        return lax.switch(branch, [first, partial(later, refresh=False), partial(later, refresh=True)],
                          grads, state, params)

    return optax.GradientTransformation(init, update)


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return scale_by_soap(warmup_cosine_decay(hp.learning_rate, workload.step_hint, hp.warmup_factor),
                         1.0 - hp.one_minus_beta1, hp.beta2, hp.weight_decay, hp.precondition_frequency)

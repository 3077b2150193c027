"""Muon (Jordan et al., 2024, kellerjordan.github.io/posts/muon; KellerJordan/Muon) in JAX: the update of
`torch.py` (Nesterov momentum orthogonalised by Newton-Schulz in bfloat16 for hidden matrices, AdamW for
the other parameters; linear warmup and cosine decay to 0 at step_hint on both learning rates).

    python submit.py --framework jax --workload kjv_lm --submission muon

`optax.contrib.muon` is not this algorithm: it bias-corrects its Nesterov momentum, runs Newton-Schulz in
the parameter's dtype (float32 here, not bfloat16) with ε = 1e-8 (not 1e-7), sends kernels of more than two
dimensions to AdamW (or, given dimension numbers, orthogonalises them as batches of matrices), and its AdamW
part is NAdam (`nesterov=True`) with Muon's ε (not 1e-10).

Orientation: every rule that depends on it (which side is transposed, the (first dimension, the rest)
view, the shape scale) is applied to the parameter in torch's layout, so that both frameworks compute
the same matrices. Flax stores a Dense or Conv `kernel` as (*window, in, out) where torch's weight is
(out, in, *window) (a transposed convolution's likewise, with in and out swapped in both); other arrays
(embeddings) have one layout in both. The tests check this on every mini workload.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from harness import spec
from harness.backends.jax.schedules import warmup_cosine_decay
from submissions.muon.common import (ADAM_BETAS, ADAM_EPSILON, NEWTON_SCHULZ_COEFFICIENTS, NEWTON_SCHULZ_DTYPE,
                                     NEWTON_SCHULZ_STEPS, SELF_TUNING_DEFAULTS, is_hidden_matrix, shape_scale)

_ITERATION_FORMAT = jnp.finfo(NEWTON_SCHULZ_DTYPE)


def _rounded(x: jax.Array) -> jax.Array:
    """x (float32) rounded to the iteration's dtype (bfloat16), nearest even, as torch rounds each result.
    An explicit `reduce_precision`: XLA may keep a float32 value where the program converts to bfloat16
    and back (its default excess precision), which would skip the roundings the reference makes."""
    return lax.reduce_precision(x, _ITERATION_FORMAT.nexp, _ITERATION_FORMAT.nmant)


def _matmul(x: jax.Array, y: jax.Array) -> jax.Array:
    """A bfloat16 matrix product accumulated in float32 and rounded once, as torch's."""
    return _rounded(jnp.matmul(x.astype(NEWTON_SCHULZ_DTYPE), y.astype(NEWTON_SCHULZ_DTYPE),
                               preferred_element_type=jnp.float32))


def orthogonalize(update: jax.Array, steps: int = NEWTON_SCHULZ_STEPS) -> jax.Array:
    r"""`torch.py`'s `orthogonalize` of a tensor in torch's layout: approximately U Vᵀ of G = U S Vᵀ, the
    tensor viewed as (first dimension, the rest), by the quintic Newton-Schulz iteration in bfloat16

        X ← G / (‖G‖_F + 1e-7)   (transposed when G has more rows than columns)
        repeat `steps` times:  A = X Xᵀ,  B = b A + (c A) A,  X ← a X + B X

    with every product and sum rounded to bfloat16 as torch rounds them (a scalar times a bfloat16 tensor
    is formed in float32 and rounded once). Returns float32 values that bfloat16 represents exactly.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    matrix = update.reshape(update.shape[0], -1)
    transpose = matrix.shape[0] > matrix.shape[1]
    x = _rounded((matrix.T if transpose else matrix).astype(jnp.float32))
    x = _rounded(x / _rounded(_rounded(jnp.sqrt(jnp.sum(x * x))) + 1e-7))
    for _ in range(steps):
        gram = _matmul(x, x.T)
        polynomial = _rounded(_rounded(b * gram) + _matmul(_rounded(c * gram), gram))
        x = _rounded(_rounded(a * x) + _matmul(polynomial, x))
    return (x.T if transpose else x).reshape(update.shape)


def torch_layout_axes(path, x: jax.Array) -> tuple[int, ...]:
    """The permutation that takes the parameter at `path` to torch's layout (see the module docstring)."""
    if getattr(path[-1], "key", None) == "kernel":
        return (x.ndim - 1, x.ndim - 2, *range(x.ndim - 2))
    return tuple(range(x.ndim))


class MuonState(NamedTuple):
    momentum: optax.Updates


def scale_by_muon(momentum: float) -> optax.GradientTransformation:
    r"""Muon's direction for hidden matrices, with momentum μ and gradient g:

        b ← μ b + (1 − μ) g,   u = (1 − μ) g + μ b   (Nesterov)
        direction = shape_scale · orthogonalize(u)   (in torch's layout; the product rounded to bfloat16)

    `torch.py` then steps θ ← θ(1 − ηλ) − η · direction: `make_optimizer` chains optax's decoupled decay and
    learning rate after this.
    """

    def init(params):
        return MuonState(jax.tree_util.tree_map(jnp.zeros_like, params))

    def direction(path, u):
        axes = torch_layout_axes(path, u)
        in_torch_layout = u.transpose(axes)
        scaled = _rounded(orthogonalize(in_torch_layout) * shape_scale(in_torch_layout.shape))
        return scaled.transpose(np.argsort(axes))

    def update(grads, state, params=None):
        del params
        buffers = optax.tree.update_moment(grads, state.momentum, momentum, 1)
        nesterov = optax.tree.update_moment(grads, buffers, momentum, 1)
        return jax.tree_util.tree_map_with_path(direction, nesterov), MuonState(buffers)

    return optax.GradientTransformation(init, update)


def hidden_matrix_labels(params, workload: spec.Workload):
    """'muon' for each hidden matrix (`is_hidden_matrix`), 'adamw' for the other parameters."""

    def label(path, p, parameter_type) -> str:
        return "muon" if is_hidden_matrix(p.ndim, parameter_type, workload.is_output_params(path)) else "adamw"

    return jax.tree_util.tree_map_with_path(label, params, workload.model_params_types)


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS

    def schedule(learning_rate: float) -> optax.Schedule:
        return warmup_cosine_decay(learning_rate, workload.step_hint, hp.warmup_factor)

    muon = optax.chain(scale_by_muon(1.0 - hp.one_minus_momentum), optax.add_decayed_weights(hp.weight_decay),
                       optax.scale_by_learning_rate(schedule(hp.learning_rate)))
    adamw = optax.adamw(schedule(hp.adam_learning_rate), *ADAM_BETAS, eps=ADAM_EPSILON,
                        weight_decay=hp.adam_weight_decay)
    return optax.partition({"muon": muon, "adamw": adamw}, hidden_matrix_labels(params, workload))

"""Beam search in JAX over any step function, one `jax.lax.while_loop` (jit-compatible: `step_fn` is
traced once; `batch_size`, `beam_size`, `eos_id`, `max_decode_len` and `alpha` are static). The rule, its
brevity penalty and early stop are `harness/beam_search.py`'s (AlgoPerf's wmt decoder).

The caller's state (encoder outputs, source mask, empty KV caches, ...) is a pytree whose array leaves
have a leading batch axis; each row is repeated `beam_size` times in place ([b0, b0, ..., b1, ...], flat
batch-beam layout), and the leaves follow their beams when beams are reselected. 0-d leaves (a cache
index) are shared by all rows and passed through.

    tokens = beam_search(step_fn, state, batch_size=8, beam_size=4, eos_id=2, max_decode_len=256)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from harness.beam_search import NEG_INF, START_TOKEN, brevity_penalty

# step_fn(last_tokens [batch·beam], state, index) -> (logits [batch·beam, vocab], state)
StepFn = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]]


def _ascending_top(scores: jax.Array, k: int) -> jax.Array:
    """Indices of the k largest of each row of `scores`, in ascending order of score (ties: the lower
    index ranks higher, as in `jax.lax.top_k`)."""
    return jnp.flip(jax.lax.top_k(scores, k)[1], axis=1)


def _take(values: jax.Array, slots: jax.Array) -> jax.Array:
    """values[b, slots[b, j]] for values [batch, n, ...] and slots [batch, m]."""
    return values[jnp.arange(values.shape[0])[:, None], slots]


def _expand(leaf: jax.Array, batch_size: int, beam_size: int) -> jax.Array:
    leaf = jnp.asarray(leaf)
    if leaf.ndim == 0:
        return leaf
    if leaf.shape[0] != batch_size:
        raise ValueError(f"beam_search: a state leaf of shape {leaf.shape} does not lead with the batch "
                         f"size {batch_size}; state arrays must be [batch_size, ...] (or 0-d)")
    return jnp.repeat(leaf, beam_size, axis=0)


def _reorder(state, flat_beams: jax.Array):
    """The state with row i of each leaf taken from row flat_beams[i]."""
    return jax.tree_util.tree_map(lambda leaf: leaf if leaf.ndim == 0 else leaf[flat_beams], state)


def beam_search(step_fn: StepFn, state, batch_size: int, beam_size: int, eos_id: int, max_decode_len: int,
                alpha: float = 0.6) -> jax.Array:
    """The best sequence of each row, int32 [batch_size, max_decode_len], 0 after its EOS (see
    `harness/beam_search.py` for the rule). `step_fn(last_tokens, state, index)` gets the token of each
    of the batch·beam rows at position `index` - 1 (START_TOKEN at 0) and returns the logits of the token
    at position `index` and the new state."""
    k, length = beam_size, max_decode_len
    rows = jnp.arange(batch_size)[:, None]
    live_log_probs = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch_size, 1))
    empty_sequences = jnp.full((batch_size, k, length + 1), START_TOKEN, jnp.int32)  # position 0: start
    carry = (jnp.array(0), live_log_probs, empty_sequences, jnp.full((batch_size, k), NEG_INF, jnp.float32),
             empty_sequences, jnp.zeros((batch_size, k), bool),
             jax.tree_util.tree_map(lambda leaf: _expand(leaf, batch_size, k), state))

    def searching(carry) -> jax.Array:
        index, live_log_probs, _, finished_scores, _, finished, _ = carry
        best_live_bound = live_log_probs[:, -1:] / brevity_penalty(length + 1, alpha)
        worst_finished = jnp.where(finished, finished_scores.min(axis=1, keepdims=True), NEG_INF)
        return (index < length) & ~jnp.all(worst_finished > best_live_bound)

    def step(carry) -> tuple:
        index, live_log_probs, live, finished_scores, finished_sequences, finished, state = carry
        last_tokens = jax.lax.dynamic_index_in_dim(live, index, axis=2, keepdims=False).reshape(-1)
        logits, state = step_fn(last_tokens, state, index)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch_size, k, -1)
        vocab = log_probs.shape[2]
        log_probs = (log_probs + live_log_probs[:, :, None]).reshape(batch_size, k * vocab)
        candidate_log_probs, candidates = jax.lax.top_k(log_probs, 2 * k)  # best first
        source_beams, tokens = candidates // vocab, candidates % vocab
        sequences = _take(live, source_beams).at[:, :, index + 1].set(tokens)
        ends = tokens == eos_id

        alive_log_probs = candidate_log_probs + jnp.where(ends, NEG_INF, 0.0)
        survivors = _ascending_top(alive_log_probs, k)
        state = _reorder(state, (rows * k + _take(source_beams, survivors)).reshape(-1))

        scores = candidate_log_probs / brevity_penalty(index + 1, alpha) + jnp.where(ends, 0.0, NEG_INF)
        pooled_scores = jnp.concatenate([finished_scores, scores], axis=1)
        kept = _ascending_top(pooled_scores, k)
        return (index + 1, _take(alive_log_probs, survivors), _take(sequences, survivors),
                _take(pooled_scores, kept),
                _take(jnp.concatenate([finished_sequences, sequences], axis=1), kept),
                _take(jnp.concatenate([finished, ends], axis=1), kept), state)

    _, _, live, _, finished_sequences, finished, _ = jax.lax.while_loop(searching, step, carry)
    best = jnp.where(finished.any(axis=1)[:, None], finished_sequences[:, -1], live[:, -1])
    return best[:, 1:]

"""Beam search in PyTorch over any step function, on the device of the state; one host sync per step
(the early-stop test). The rule, its brevity penalty and early stop are `harness/beam_search.py`'s
(AlgoPerf's wmt decoder); the tokens are those of the JAX twin (`harness/backends/jax/beam_search.py`).

The caller's state (encoder outputs, source mask, empty KV caches, ...) is a nest of dicts, lists and
tuples whose tensors have a leading batch axis; each row is repeated `beam_size` times in place ([b0, b0,
..., b1, ...], flat batch-beam layout), and the tensors follow their beams when beams are reselected. 0-d
tensors (a cache index) and other leaves are shared by all rows and passed through.

    tokens = beam_search(step_fn, state, batch_size=8, beam_size=4, eos_id=2, max_decode_len=256)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils import _pytree as pytree

from harness.beam_search import NEG_INF, START_TOKEN, brevity_penalty

# step_fn(last_tokens [batch·beam], state, index) -> (logits [batch·beam, vocab], state)
StepFn = Callable[[torch.Tensor, Any, int], tuple[torch.Tensor, Any]]


def _top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`jax.lax.top_k` along dim 1: the k largest values, largest first, and their indices; among equal
    values the lower index is taken and ranks higher (`torch.topk` may take and order them otherwise)."""
    kth = values.topk(k, dim=1).values[:, -1:]
    above, level = values > kth, values == kth
    taken = above | (level & (level.cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))
    earlier_first = torch.arange(values.shape[1], 0, -1, device=values.device)
    indices = torch.where(taken, earlier_first, 0).topk(k, dim=1).indices  # the k taken, by index
    values = values.gather(1, indices)
    by_value = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, by_value), indices.gather(1, by_value)


def _ascending_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest of each row of `scores`, in ascending order of score (ties: the lower
    index ranks higher)."""
    return _top_k(scores, k)[1].flip(1)


def _take(values: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """values[b, slots[b, j]] for values [batch, n, ...] and slots [batch, m]."""
    return values[torch.arange(values.shape[0], device=values.device)[:, None], slots]


def _shared(leaf) -> bool:
    """Whether a state leaf is shared by all rows (a 0-d tensor or not a tensor) rather than per row."""
    return not isinstance(leaf, torch.Tensor) or leaf.ndim == 0


def _expand(leaf, batch_size: int, beam_size: int):
    if _shared(leaf):
        return leaf
    if leaf.shape[0] != batch_size:
        raise ValueError(f"beam_search: a state tensor of shape {tuple(leaf.shape)} does not lead with the "
                         f"batch size {batch_size}; state tensors must be [batch_size, ...] (or 0-d)")
    return leaf.repeat_interleave(beam_size, dim=0)


def _reorder(state, flat_beams: torch.Tensor):
    """The state with row i of each tensor taken from row flat_beams[i]."""
    return pytree.tree_map(lambda leaf: leaf if _shared(leaf) else leaf.index_select(0, flat_beams), state)


@torch.no_grad()
def beam_search(step_fn: StepFn, state, batch_size: int, beam_size: int, eos_id: int, max_decode_len: int,
                alpha: float = 0.6) -> torch.Tensor:
    """The best sequence of each row, int64 [batch_size, max_decode_len], 0 after its EOS (see
    `harness/beam_search.py` for the rule). `step_fn(last_tokens, state, index)` gets the token of each
    of the batch·beam rows at position `index` - 1 (START_TOKEN at 0) and returns the logits of the token
    at position `index` and the new state."""
    k, length = beam_size, max_decode_len
    tensors = [leaf for leaf in pytree.tree_leaves(state) if isinstance(leaf, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    rows = torch.arange(batch_size, device=device)[:, None]
    live_log_probs = torch.tensor([0.0] + [NEG_INF] * (k - 1), device=device).repeat(batch_size, 1)
    live = torch.full((batch_size, k, length + 1), START_TOKEN, dtype=torch.long, device=device)
    finished_scores = torch.full((batch_size, k), NEG_INF, device=device)
    finished_sequences = live.clone()
    finished = torch.zeros((batch_size, k), dtype=torch.bool, device=device)
    state = pytree.tree_map(lambda leaf: _expand(leaf, batch_size, k), state)

    for index in range(length):
        if index > 0:  # before the first step no slot is finished
            best_live_bound = live_log_probs[:, -1:] / brevity_penalty(length + 1, alpha)
            worst_finished = torch.where(finished, finished_scores.amin(dim=1, keepdim=True), NEG_INF)
            if bool((worst_finished > best_live_bound).all()):
                break
        logits, state = step_fn(live[:, :, index].reshape(-1), state, index)
        log_probs = torch.log_softmax(logits.float(), dim=-1).reshape(batch_size, k, -1)
        vocab = log_probs.shape[2]
        log_probs = (log_probs + live_log_probs[:, :, None]).reshape(batch_size, k * vocab)
        candidate_log_probs, candidates = _top_k(log_probs, 2 * k)  # best first
        source_beams, tokens = candidates // vocab, candidates % vocab
        sequences = _take(live, source_beams)
        sequences[:, :, index + 1] = tokens
        ends = tokens == eos_id

        alive_log_probs = candidate_log_probs + torch.where(ends, NEG_INF, 0.0)
        survivors = _ascending_top(alive_log_probs, k)
        state = _reorder(state, (rows * k + _take(source_beams, survivors)).reshape(-1))
        live_log_probs, live = _take(alive_log_probs, survivors), _take(sequences, survivors)

        scores = candidate_log_probs / brevity_penalty(index + 1, alpha) + torch.where(ends, 0.0, NEG_INF)
        pooled_scores = torch.cat([finished_scores, scores], dim=1)
        kept = _ascending_top(pooled_scores, k)
        finished_scores = _take(pooled_scores, kept)
        finished_sequences = _take(torch.cat([finished_sequences, sequences], dim=1), kept)
        finished = _take(torch.cat([finished, ends], dim=1), kept)

    best = torch.where(finished.any(dim=1)[:, None], finished_sequences[:, -1], live[:, -1])
    return best[:, 1:]

"""Beam search, framework-free: the rule that PyTorch's and JAX's `beam_search`
(`harness/backends/<framework>/beam_search.py`) both follow, and its constants.

The rule is AlgoPerf's wmt decoder (`algoperf/workloads/wmt/wmt_jax/decode.py`, itself from flax's wmt
example). Each batch row keeps k *live* beams (prefixes without EOS) and k *finished* ones (ending in
EOS). A beam's log-probability is log p(y) = Σᵢ log_softmax(logitsᵢ)[yᵢ]; a finished sequence of n
tokens (EOS included) scores log p(y) / brevity_penalty(n), brevity_penalty(n) = ((5 + n) / 6)^α. A step
feeds each live beam's last token (START_TOKEN at position 0) to the step function, scores its k·V
extensions, keeps the 2k most probable (at most k of them end in EOS, so k live ones remain), makes the
best k non-EOS extensions the live beams, and merges those that end in EOS into the finished beams (best
k scores kept). The search stops after `max_decode_len` tokens, or once in every row every finished slot
is filled and scores above the best live beam's log-probability divided by
brevity_penalty(max_decode_len + 1) (no live beam can then improve the finished set: log-probabilities
only fall, and AlgoPerf's bound counts its start token in the length, so the steps are the same as its).
The result of a row is its best finished sequence, or its best live beam if none finished.

Slots are kept in ascending order of score (the best last) and ties go to the lower slot, as
`jax.lax.top_k` and AlgoPerf, so both frameworks pick the same beams.
"""

from __future__ import annotations

NEG_INF = -1.0e7  # AlgoPerf's decode.NEG_INF: the log-probability of an empty slot
START_TOKEN = 0  # fed at position 0 (AlgoPerf's sequences start with a 0)


def brevity_penalty(length, alpha: float):
    """((5 + length) / 6)^alpha, for a Python number, a torch tensor or a JAX array `length`."""
    return ((5.0 + length) / 6.0) ** alpha

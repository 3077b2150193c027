"""Beam search (`harness/backends/torch/beam_search.py`, `harness/backends/jax/beam_search.py`) on small
step functions, each behaviour in both frameworks (JAX's under `jax.jit`; skipped without JAX), and the
two frameworks' tokens compared on random step functions.

The step functions are a `HistoryModel`: the logits of the token at position i are a table row chosen by
a code of every token the beam has fed so far (the start token, then its own tokens), plus a bias on EOS
at position i. The fed tokens live in a per-row cache in the state, like a decoder's KV cache, and the
table in the state too, so a beam gets its own logits only if the state is expanded in flat batch-beam
layout and follows the beam whenever beams are reselected. References are computed in NumPy from the
model: the greedy argmax decoder, log-probabilities of given sequences, and (where the beam is wide
enough to keep every prefix) the best-scoring of all sequences by exhaustive enumeration.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils import _pytree as pytree

from harness.backends.torch.beam_search import beam_search as torch_beam_search
from harness.beam_search import START_TOKEN, brevity_penalty

try:
    import jax
    import jax.numpy as jnp

    from harness.backends.jax.beam_search import beam_search as jax_beam_search

    JITTED_SEARCH = jax.jit(jax_beam_search, static_argnums=(0, 2, 3, 4, 5, 6))
except ImportError:
    jax = None

EOS = 2
NEEDS_JAX = pytest.mark.skipif(jax is None, reason="JAX is not installed")
FRAMEWORKS = ["torch", pytest.param("jax", marks=NEEDS_JAX)]
CERTAIN = 100.0  # an EOS bias that makes EOS (almost) certain, or with its negative impossible


class HistoryModel:
    """logits(row, tokens)[v] = table[row, code(fed)][v] + (v == EOS) · eos_bias[row, i] for the token at
    position i = len(tokens), where fed = [START_TOKEN, *tokens], code = Σⱼ (fedⱼ + 1)(V + 1)ʲ mod M."""

    def __init__(self, table: np.ndarray, eos_bias: np.ndarray):
        self.table = table.astype(np.float32)  # [batch, M, V]
        self.eos_bias = eos_bias.astype(np.float32)  # [batch, max_decode_len]
        self.batch, self.modulus, self.vocab = table.shape

    @property
    def max_decode_len(self) -> int:
        return self.eos_bias.shape[1]

    def code(self, tokens) -> int:
        fed = [START_TOKEN, *tokens]
        return sum((token + 1) * (self.vocab + 1) ** j for j, token in enumerate(fed)) % self.modulus

    def logits(self, row: int, tokens) -> np.ndarray:
        logits = self.table[row, self.code(tokens)].copy()
        logits[EOS] += self.eos_bias[row, len(tokens)]
        return logits

    def log_prob(self, row: int, tokens) -> float:
        """log p(tokens) = Σᵢ log_softmax(logits(row, tokens[:i]))[tokens[i]], in float64."""
        total = 0.0
        for i, token in enumerate(tokens):
            logits = self.logits(row, tokens[:i]).astype(np.float64)
            total += logits[token] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        return total

    def greedy(self) -> np.ndarray:
        """The argmax decoder: [batch, max_decode_len] tokens, 0 after EOS."""
        tokens = np.zeros((self.batch, self.max_decode_len), np.int64)
        for row in range(self.batch):
            for i in range(self.max_decode_len):
                tokens[row, i] = self.logits(row, list(tokens[row, :i])).argmax()
                if tokens[row, i] == EOS:
                    break
        return tokens

    def best_finished(self, alpha: float) -> np.ndarray:
        """Of all sequences ending in (their only) EOS, the one with the best log p / brevity_penalty."""
        best = np.zeros((self.batch, self.max_decode_len), np.int64)
        words = [v for v in range(self.vocab) if v != EOS]
        for row in range(self.batch):
            sequences = [[*prefix, EOS] for n in range(self.max_decode_len)
                         for prefix in itertools.product(words, repeat=n)]
            winner = max(sequences, key=lambda s: self.log_prob(row, s) / brevity_penalty(len(s), alpha))
            best[row, :len(winner)] = winner
        return best

    def state(self) -> dict:
        fed = np.zeros((self.batch, self.max_decode_len), np.int32)
        return {"table": self.table, "eos_bias": self.eos_bias, "history": (fed,), "steps": np.int32(0)}


def _weights(vocab: int, length: int, modulus: int) -> np.ndarray:
    return np.array([pow(vocab + 1, j, modulus) for j in range(length)], np.int64)


class Calls:
    count = 0

    @classmethod
    def add(cls) -> None:
        cls.count += 1


def torch_step(last: torch.Tensor, state: dict, index: int):
    table, eos_bias, (fed,) = state["table"], state["eos_bias"], state["history"]
    assert int(state["steps"]) == index  # a 0-d leaf is passed through, not expanded
    fed = fed.clone()
    fed[:, index] = last + 1
    _, modulus, vocab = table.shape
    code = (fed.long() * torch.from_numpy(_weights(vocab, fed.shape[1], modulus))).sum(1) % modulus
    logits = table[torch.arange(len(code)), code]
    logits[:, EOS] += eos_bias[:, index]
    Calls.add()
    return logits, {"table": table, "eos_bias": eos_bias, "history": (fed,), "steps": state["steps"] + 1}


def jax_step(last, state: dict, index):
    table, eos_bias, (fed,) = state["table"], state["eos_bias"], state["history"]
    fed = fed.at[:, index].set(last + 1)
    _, modulus, vocab = table.shape
    code = (fed * jnp.asarray(_weights(vocab, fed.shape[1], modulus), jnp.int32)).sum(1) % modulus
    logits = table[jnp.arange(len(code)), code].at[:, EOS].add(eos_bias[:, index])
    jax.debug.callback(Calls.add)
    return logits, {"table": table, "eos_bias": eos_bias, "history": (fed,), "steps": state["steps"] + 1}


def run(framework: str, model: HistoryModel, beam_size: int, alpha: float = 0.6) -> tuple[np.ndarray, int]:
    """(tokens [batch, max_decode_len], number of step calls) of beam search on `model`."""
    Calls.count = 0
    args = (model.batch, beam_size, EOS, model.max_decode_len, alpha)
    if framework == "torch":
        state = pytree.tree_map(torch.as_tensor, model.state())
        tokens = torch_beam_search(torch_step, state, *args).numpy()
    else:
        state = jax.tree_util.tree_map(jnp.asarray, model.state())
        tokens = np.asarray(JITTED_SEARCH(jax_step, state, *args))
        jax.effects_barrier()  # the step calls' callbacks have run
    assert tokens.shape == (model.batch, model.max_decode_len)
    return tokens, Calls.count


def random_model(seed: int, batch: int, vocab: int, max_decode_len: int, eos_bias=None,
                 scale: float = 2.0, margin: float = 0.0, modulus: int = 997) -> HistoryModel:
    """A random table N(0, scale²); with `margin`, one random non-EOS token per entry `margin` above the
    rest (probability ≈ 1); EOS's column is 0 where `eos_bias` is given, else random too."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0, scale, (batch, modulus, vocab))
    if margin:
        favourite = rng.choice([v for v in range(vocab) if v != EOS], (batch, modulus))
        np.put_along_axis(table, favourite[..., None], table.max(-1, keepdims=True) + margin, -1)
    if eos_bias is None:
        eos_bias = np.zeros((batch, max_decode_len))
    else:
        table[..., EOS] = 0.0
    return HistoryModel(table, eos_bias)


def ending_at(ends: list[int | None], max_decode_len: int) -> np.ndarray:
    """An EOS bias making EOS certain at position ends[row] and impossible elsewhere (never for None)."""
    bias = np.full((len(ends), max_decode_len), -CERTAIN)
    for row, end in enumerate(ends):
        if end is not None:
            bias[row, end] = CERTAIN
    return bias


def model_from_rule(rule, vocab: int, max_decode_len: int) -> HistoryModel:
    """One row whose next-token probabilities after `tokens` are rule(tokens) (a dict token -> p; the
    unnamed tokens share what is left); the modulus is large enough that every prefix has its own code."""
    modulus = (vocab + 1) ** max_decode_len
    model = HistoryModel(np.zeros((1, modulus, vocab)), np.zeros((1, max_decode_len)))
    for n in range(max_decode_len):
        for tokens in itertools.product(range(vocab), repeat=n):
            named = rule(tokens)
            rest = (1 - sum(named.values())) / (vocab - len(named))
            model.table[0, model.code(tokens)] = np.log([named.get(v, rest) for v in range(vocab)])
    return model


def lengths(tokens: np.ndarray) -> list[int]:
    """Each row's length up to and including its first EOS (the full width without one), after checking
    that only zeros follow the EOS."""
    result = []
    for row in tokens:
        ends = np.flatnonzero(row == EOS)
        if len(ends):
            assert not row[ends[0] + 1:].any(), f"tokens after EOS are not 0: {row}"
        result.append(ends[0] + 1 if len(ends) else len(row))
    return result


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("seed", range(3))
def test_a_beam_of_one_is_the_greedy_decoder(framework, seed):
    """With one beam, the live beam follows the argmax; EOS is either certain (the greedy decoder stops
    there; later finished beams are less probable, and alpha = 0 scores by probability alone) or
    impossible (it is never the runner-up that would finish instead); a row that never ends returns its
    live beam."""
    model = random_model(seed, batch=3, vocab=11, max_decode_len=8, eos_bias=ending_at([1, 5, None], 8))
    greedy = model.greedy()
    assert lengths(greedy) == [2, 6, 8]
    np.testing.assert_array_equal(run(framework, model, beam_size=1, alpha=0.0)[0], greedy)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_with_confident_steps_four_beams_find_the_greedy_sequence(framework):
    """Where the argmax has probability ≈ 1 at every step, any other sequence is at most e⁻³⁰ times as
    probable: beam search and greedy decoding agree, rows ending at different steps, 0 after EOS."""
    model = random_model(0, batch=3, vocab=11, max_decode_len=8, margin=30.0,
                         eos_bias=ending_at([0, 3, 6], 8))
    tokens = run(framework, model, beam_size=4)[0]
    np.testing.assert_array_equal(tokens, model.greedy())
    assert lengths(tokens) == [1, 4, 7]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_without_a_finished_beam_the_best_live_beam_is_returned_after_every_step(framework):
    model = random_model(1, batch=2, vocab=11, max_decode_len=6, margin=30.0,
                         eos_bias=ending_at([None, None], 6))
    tokens, calls = run(framework, model, beam_size=4)
    np.testing.assert_array_equal(tokens, model.greedy())
    assert calls == 6 and lengths(tokens) == [6, 6] and not (tokens == EOS).any()


def greedy_trap(tokens: tuple) -> dict:
    """1 then EOS is the greedy path (p = 0.5 · 0.4), 3 then EOS is more probable (0.4 · 0.9)."""
    return {(): {1: 0.5, 3: 0.4, EOS: 0.04}, (1,): {EOS: 0.4, 0: 0.25, 3: 0.2},
            (3,): {EOS: 0.9, 0: 0.06}}.get(tokens, {EOS: 0.97, 0: 0.02})


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_beams_find_a_more_probable_sequence_than_greedy(framework):
    model = model_from_rule(greedy_trap, vocab=4, max_decode_len=4)
    greedy, tokens = model.greedy(), run(framework, model, beam_size=2)[0]
    assert greedy.tolist() == [[1, EOS, 0, 0]] and tokens.tolist() == [[3, EOS, 0, 0]]
    assert model.log_prob(0, [3, EOS]) > model.log_prob(0, [1, EOS])


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("seed", range(1, 5))  # in each, a state not gathered changes the answer
def test_state_follows_its_beam(framework, seed):
    """Logits keyed by the whole history in the state: 16 beams keep every prefix (at most 8) of a 3-token
    vocabulary, and all their extensions among the 32 candidates, so the search is exhaustive and must
    return the best-scoring of all 15 sequences of up to 4 tokens. EOS is unlikely before position 3, so most
    winners are long and their last tokens' logits depend on the first ones: a state not expanded row by
    row, or not gathered when beams are reselected, gives a beam another's logits and another answer."""
    model = random_model(seed, batch=4, vocab=3, max_decode_len=4,
                         eos_bias=np.array([[-4.0, -4.0, -4.0, 0.0]] * 4))
    best = model.best_finished(alpha=0.6)
    assert lengths(best).count(4) >= 3
    np.testing.assert_array_equal(run(framework, model, beam_size=16)[0], best)


def long_or_short(tokens: tuple) -> dict:
    """[EOS] has log p = -1.0; [1, 1, 1, EOS] has -0.6 - 0.2 - 0.2 - 0.2 = -1.2; other ends are unlikely."""
    return {(): {EOS: np.exp(-1.0), 1: np.exp(-0.6)}, (1,): {1: np.exp(-0.2), EOS: 0.02},
            (1, 1): {1: np.exp(-0.2), EOS: 0.02}, (1, 1, 1): {EOS: np.exp(-0.2)}}.get(tokens, {EOS: 0.02})


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_brevity_penalty_lets_a_less_probable_longer_sequence_win(framework):
    """-1.2 / ((5 + 4) / 6)^0.6 = -0.94 beats -1.0 / 1 with alpha 0.6; with alpha 0 probability decides."""
    model = model_from_rule(long_or_short, vocab=4, max_decode_len=4)
    assert model.log_prob(0, [1, 1, 1, EOS]) < model.log_prob(0, [EOS])
    assert run(framework, model, beam_size=2, alpha=0.6)[0].tolist() == [[1, 1, 1, EOS]]
    assert run(framework, model, beam_size=2, alpha=0.0)[0].tolist() == [[EOS, 0, 0, 0]]


def settled_early(tokens: tuple) -> dict:
    """After 2 steps the finished [EOS] (-0.69) and [1, EOS] (-1.31 / 1.10 = -1.19) beat the bound of any
    live beam (at most -1.20 + log(0.1 / 3) = -4.6, and -4.6 / ((5 + 21) / 6)^0.6 = -1.91)."""
    return {(): {EOS: 0.5, 1: 0.3, 3: 0.19}, (1,): {EOS: 0.9}, (3,): {EOS: 0.9}}.get(tokens, {EOS: 0.3})


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_search_stops_once_no_live_beam_can_beat_the_finished_ones(framework):
    model = model_from_rule(settled_early, vocab=4, max_decode_len=4)
    model.eos_bias = np.zeros((1, 20), np.float32)  # 20 positions; the rule's first 2 settle the search
    tokens, calls = run(framework, model, beam_size=2)
    assert calls == 2 and tokens.tolist() == [[EOS] + [0] * 19]


def even_odds(tokens: tuple) -> dict:
    """[1, EOS] and [3, EOS] are equally probable (0.4 · 0.9), and the best."""
    return {(): {1: 0.4, 3: 0.4, EOS: 0.15}}.get(tokens, {EOS: 0.9})


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("beam_size, winner", [(1, 1), (2, 3), (4, 3)])
def test_exact_ties_are_broken_as_in_algoperf(framework, beam_size, winner):
    """Among equal values the lower index ranks first (`jax.lax.top_k`), in slots kept in ascending order.
    One beam keeps [1] (index 1 before 3). Wider, [3] and [1] are both live, [3] in the lower slot, so [3,
    EOS] ranks before [1, EOS] and takes the better finished slot. (AlgoPerf's decode.beam_search gives the
    same; torch.topk alone takes equal values in another order, and [1, EOS] with 4 beams.)"""
    model = model_from_rule(even_odds, vocab=4, max_decode_len=4)
    assert model.log_prob(0, [1, EOS]) == model.log_prob(0, [3, EOS])
    assert run(framework, model, beam_size)[0].tolist() == [[winner, EOS, 0, 0]]


@NEEDS_JAX
@pytest.mark.parametrize("seed", range(5))
def test_torch_and_jax_give_the_same_tokens(seed):
    rng = np.random.default_rng(100 + seed)
    model = random_model(seed, batch=3, vocab=11, max_decode_len=12, eos_bias=rng.normal(-1.0, 2.0, (3, 12)))
    tokens = run("torch", model, beam_size=4)[0]
    np.testing.assert_array_equal(tokens, run("jax", model, beam_size=4)[0])
    assert len(set(lengths(tokens))) > 1  # rows end at different steps


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_state_array_without_the_batch_axis_is_refused(framework):
    model = random_model(0, batch=2, vocab=5, max_decode_len=3)
    search, step, convert = ((torch_beam_search, torch_step, torch.as_tensor) if framework == "torch"
                             else (jax_beam_search, jax_step, jnp.asarray))
    state = {"table": convert(model.table), "eos_bias": convert(model.eos_bias[:1])}
    with pytest.raises(ValueError, match=r"shape \(1, 3\) does not lead with the batch size 2"):
        search(step, state, 2, 4, EOS, 3)

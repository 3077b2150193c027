"""Corpus BLEU accumulated over evaluation batches, framework-free (sacrebleu's defaults: 13a
tokenisation, exponential smoothing — the settings of AlgoPerf's wmt `bleu.corpus_bleu`).

A batch's detokenised translations give BLEU's sufficient statistics (`bleu_statistics`: n-gram
matches and totals, system and reference lengths); the statistics of a corpus are the sums over its
batches (`harness.evaluation.BatchSums`), and `bleu_from_statistics` turns the sums into the score.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from harness.errors import DataMissingError

MAX_NGRAM_ORDER = 4  # BLEU's n-gram orders 1..4 (Papineni et al., 2002; sacrebleu's default)
BLEU_KEYS = (
    [f"bleu_correct_{n}" for n in range(1, MAX_NGRAM_ORDER + 1)]
    + [f"bleu_total_{n}" for n in range(1, MAX_NGRAM_ORDER + 1)]
    + ["bleu_sys_len", "bleu_ref_len"]
)


def _bleu_class():
    try:
        from sacrebleu.metrics import BLEU
    except ImportError as exc:
        raise DataMissingError("BLEU needs sacrebleu; pip install sacrebleu") from exc
    return BLEU


class BleuReferences(NamedTuple):
    """Reference texts tokenised and counted once (a sacrebleu scorer's reference cache), for scoring
    translations of them at every evaluation."""

    count: int
    scorer: Any


def bleu_references(references: list[str]) -> BleuReferences:
    """`references` prepared once for `bleu_statistics` (none: a batch without real rows)."""
    return BleuReferences(len(references), _bleu_class()(references=[references]) if references else None)


def bleu_statistics(hypotheses: list[str], references: list[str] | BleuReferences) -> dict[str, float]:
    """BLEU's sufficient statistics of a batch of detokenised translations (sacrebleu's 13a tokeniser);
    the statistics of a corpus are the sums over its batches. `references`: one text per hypothesis,
    or `bleu_references` of them (the same statistics). No translations (a batch part without real rows,
    in a multi-process evaluation) count nothing."""
    count = references.count if isinstance(references, BleuReferences) else len(references)
    if not hypotheses and count == 0:
        return dict.fromkeys(BLEU_KEYS, 0.0)
    if not isinstance(references, BleuReferences):
        score = _bleu_class()().corpus_score(hypotheses, [references])
    elif len(hypotheses) == references.count:
        score = references.scorer.corpus_score(hypotheses, None)
    else:
        raise ValueError(f"{len(hypotheses)} translations for {references.count} references")
    values = list(score.counts) + list(score.totals) + [score.sys_len, score.ref_len]
    return {key: float(value) for key, value in zip(BLEU_KEYS, values)}


def bleu_from_statistics(sums: dict[str, float]) -> float:
    """Corpus BLEU (0-100) from summed statistics, with sacrebleu's default exponential smoothing."""
    correct = [int(sums[f"bleu_correct_{n}"]) for n in range(1, MAX_NGRAM_ORDER + 1)]
    total = [int(sums[f"bleu_total_{n}"]) for n in range(1, MAX_NGRAM_ORDER + 1)]
    score = _bleu_class().compute_bleu(
        correct, total, int(sums["bleu_sys_len"]), int(sums["bleu_ref_len"]), smooth_method="exp"
    )
    return float(score.score)

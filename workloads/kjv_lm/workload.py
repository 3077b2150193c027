"""Byte-level language modelling on the King James Bible: the mini suite's analog of AlgoPerf's
finewebedu_lm (next-token prediction, perplexity target).

Splits are by chapter, in canonical order: chapter i goes to validation when i % 20 == 7, to test
when i % 20 == 17, else to train (90/5/5). A split's text is its verses joined by newlines, as
UTF-8 bytes, cut into windows of SEQUENCE_LENGTH + 1 bytes with stride SEQUENCE_LENGTH:
inputs = window[:-1], targets = window[1:]. Metric: perplexity per byte, exp(mean loss); lower is better.
Targets and budget come from `scripts/set_targets.py`; see docs/targets.md for the runs behind them.
"""

from __future__ import annotations

import math

import numpy as np

from harness import spec
from workloads.kjv_lm import data

SEQUENCE_LENGTH = 128
VOCABULARY_SIZE = 256  # bytes
CHAPTERS_PER_CYCLE, VALIDATION_CHAPTER, TEST_CHAPTER = 20, 7, 17


def windows(text: str) -> dict[str, np.ndarray]:
    """Byte windows of a text: int64 inputs and targets of shape (N, SEQUENCE_LENGTH)."""
    tokens = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    n = (len(tokens) - 1) // SEQUENCE_LENGTH
    index = np.arange(n)[:, None] * SEQUENCE_LENGTH + np.arange(SEQUENCE_LENGTH + 1)[None, :]
    window = tokens[index]
    return {"inputs": window[:, :-1], "targets": window[:, 1:]}


def split_by_chapter(verses: list[tuple[str, int, int, str]]) -> dict[str, str]:
    texts: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    chapter_index, previous = -1, None
    for book, chapter, _, text in verses:
        if (book, chapter) != previous:
            chapter_index, previous = chapter_index + 1, (book, chapter)
        position = chapter_index % CHAPTERS_PER_CYCLE
        split = "validation" if position == VALIDATION_CHAPTER else "test" if position == TEST_CHAPTER else "train"
        texts[split].append(text)
    return {split: "\n".join(lines) + "\n" for split, lines in texts.items()}


class KjvLmWorkload(spec.Workload):
    name = "kjv_lm"
    suite = "mini"
    target_metric_name = "ppl"
    metric_direction = "min"
    # From scripts/set_targets.py (five-point tuning, median of three seeds) on a 2-core CPU, with
    # 105 ms a step measured on a quiet machine: docs/targets/kjv_lm.json, docs/targets.md.
    validation_target_value = 3.41
    test_target_value = 3.46
    # 1.5 x 1200 steps (the latest seed's steps to target) x calibration_seconds_per_step, rounded up
    # to 10 s (docs/targets.md); scaled on other machines (harness/machine_profile.py).
    max_allowed_runtime_sec = 150.0
    calibration_seconds_per_step = 0.07815  # python -m harness.calibrate on the calibration machine
    # max(budget / 20, 6 x one evaluation's 2.21 s) (docs/targets.md): evaluation under 15 % of a trial
    eval_period_time_sec = 16.0
    step_hint = 1200  # about 2 minutes of NAdamW steps on a 2-core CPU (docs/targets.md)
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
    reference_batch_size = 32
    # Window counts of the engKJV2006eb export; evaluation uses the first windows of each split.
    num_train_examples = 29_230
    num_validation_examples = 1_000  # of 1,519
    num_test_examples = 1_000  # of 1,685
    num_eval_train_examples = 500
    # Fastest of 16/32/64/128/256/512 on a quiet 2-core CPU: an evaluation in 2.1 s (2.6 s at 128).
    eval_batch_size = 32

    def read_splits(self) -> tuple[dict[str, dict[str, np.ndarray]], str]:
        verses, data_hash = data.load_verses(self.data_dir)
        return {split: windows(text) for split, text in split_by_chapter(verses).items()}, data_hash

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / sums["count"]
        return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf")}

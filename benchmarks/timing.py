"""What the timing benchmarks share: their clocks, and how a set of block ratios becomes a verdict.

A benchmark that checks a goal such as "harness step time <= 1.02x a bare loop" measures many
short, interleaved blocks of both sides, turns each pair of blocks into one ratio, and reports the
median ratio with a bootstrap confidence interval (percentile method, seeded, 10,000 resamples).
The verdict then says what the interval allows:

- "meets the goal": the whole interval is at or below the goal;
- "misses the goal": the whole interval is above it;
- "inconclusive: interval wider than the goal's margin": the interval straddles the goal, so
  the measurement cannot tell (run more blocks, or on a quieter machine).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
RESAMPLES = 10_000
CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,  # what the harness's trial clock reads
    "cpu": time.process_time,  # this process's CPU seconds: time lost to other processes is left out
}
MEETS, MISSES, INCONCLUSIVE = "meets the goal", "misses the goal", "inconclusive: interval wider than the goal's margin"


@dataclass(frozen=True)
class Interval:
    """The median of `count` values and a bootstrap confidence interval [low, high] for it."""

    median: float
    low: float
    high: float
    count: int
    confidence: float = CONFIDENCE

    def __str__(self) -> str:
        return (f"{self.median:.4f} ({self.confidence:.0%} interval {self.low:.4f} to {self.high:.4f}, "
                f"{self.count} pairs)")


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """The median of `values` with a seeded percentile-bootstrap interval (`scipy.stats.bootstrap`)."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"values must be finite, got {array.tolist()}")
    median = float(np.median(array))
    if np.all(array == array[0]):  # a degenerate sample: every resample has the same median
        return Interval(median, median, median, array.size, confidence)
    result = scipy.stats.bootstrap(
        (array,), np.median, n_resamples=RESAMPLES, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Interval(median, float(ci.low), float(ci.high), array.size, confidence)


def verdict(interval: Interval, goal: float) -> str:
    """Whether the interval lies at or below `goal` (an upper bound on a ratio), above it, or across it."""
    if interval.high <= goal:
        return MEETS
    if interval.low > goal:
        return MISSES
    return INCONCLUSIVE

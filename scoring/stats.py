"""Uncertainty and comparisons: bootstrap intervals, geometric-mean speedups, significance tests.

Bootstrap (own seeded resampling, numpy's PCG64). A replicate redraws, for every (entry,
workload) independently, as many studies as it has, with replacement; recomputes the medians
t*[s, w]; and pushes them through the whole scoring pipeline (held-out rule, ratios, profile,
score). The interval is the percentile interval of the replicates (widened to contain the estimate if it
falls outside; see `percentile_interval`). Studies are the natural unit:
they are the independent repetitions of the tuning protocol; trials within a study are not.

Speedup over a reference (AlgoPerf's alternative score): per workload
speedup_w = t_ref,w / t_s,w, summarised by the geometric mean exp(mean_w log speedup_w).
A time of ∞ is replaced by the workload's budget + 1 s where the budget is known (as AlgoPerf's
compute_speedups.py does); otherwise a workload with an ∞ on either side is left out.

Significance ("A reaches the target faster than B on workload W"): one-sided Mann-Whitney U test
on the per-study times of A and B, its p-value from the exact permutation distribution of U.
Why this test: per-study times are right-censored (∞ = not reached) and heavy-tailed, and there
are only a handful of studies; a rank test needs no distributional assumption and ranks ∞ as
"slowest" consistently; the studies of A and B are independent (own seeds and hyperparameter
draws), so a paired test does not apply. With 3 studies each the smallest possible p-value is
1/20 = 0.05, with 5 each 1/252 ≈ 0.004.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


def resample_medians(
    values: Mapping[tuple[str, str], np.ndarray],
    entries: Sequence[str],
    workloads: Sequence[str],
    n_resamples: int,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap medians t*[b, s, w] (shape (n_resamples, entries, workloads)), resampling the
    studies of each (entry, workload) with replacement; ∞ where an entry has no study."""
    n_e, n_w = len(entries), len(workloads)
    k_max = max((len(v) for v in values.values()), default=1) or 1
    table = np.full((n_e, n_w, k_max), np.nan)
    counts = np.zeros((n_e, n_w), dtype=np.int64)
    for i, e in enumerate(entries):
        for j, w in enumerate(workloads):
            v = values.get((e, w))
            if v is not None and len(v):
                table[i, j, : len(v)] = v
                counts[i, j] = len(v)
    rng = np.random.default_rng(seed)
    draws = np.floor(rng.random((n_resamples, n_e, n_w, k_max)) * np.maximum(counts, 1)[..., None])
    draws = draws.astype(np.int64)
    picked = np.take_along_axis(np.broadcast_to(table, draws.shape), draws, axis=-1)
    picked = np.where(np.arange(k_max) < counts[..., None], picked, np.nan)
    out = np.full((n_resamples, n_e, n_w), np.inf)
    has = counts > 0
    # np.median over the first `count` entries: sort (NaN last), take the middle one(s).
    ordered = np.sort(picked, axis=-1)
    lo = np.maximum(counts - 1, 0) // 2
    hi = counts // 2
    low = np.take_along_axis(ordered, np.broadcast_to(lo[..., None], ordered.shape[:-1] + (1,)), axis=-1)[..., 0]
    high = np.take_along_axis(ordered, np.broadcast_to(hi[..., None], ordered.shape[:-1] + (1,)), axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        median = np.where(low == high, low, (low + high) / 2)
    out[:, has] = median[:, has]
    return out


def observed_medians(
    values: Mapping[tuple[str, str], np.ndarray], entries: Sequence[str], workloads: Sequence[str]
) -> np.ndarray:
    """t[s, w] = median of the per-study values (∞ where an entry has no study)."""
    t = np.full((len(entries), len(workloads)), np.inf)
    for i, e in enumerate(entries):
        for j, w in enumerate(workloads):
            v = values.get((e, w))
            if v is not None and len(v):
                t[i, j] = np.median(v)
    return t


def percentile_interval(
    samples: np.ndarray, point: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap `samples` (axis 0), widened where needed to contain the
    estimate `point`. Bounds are order statistics (the lower one for the low bound, the higher
    one for the high bound), so ∞ stays ∞. Why widen: a score divides by the fastest entry's
    time, and the minimum of resampled medians is biased low, so resampled scores sit below the
    estimate when entries are close; an interval beside its own estimate would mislead."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    samples = np.asarray(samples, dtype=np.float64)
    point = np.asarray(point, dtype=np.float64)
    alpha = (1.0 - confidence) / 2.0
    low = np.quantile(samples, alpha, axis=0, method="lower")
    high = np.quantile(samples, 1.0 - alpha, axis=0, method="higher")
    undefined = np.isnan(point)
    low = np.where(undefined, np.nan, np.fmin(low, point))
    high = np.where(undefined, np.nan, np.fmax(high, point))
    return low, high


def bootstrap(
    values: Mapping[tuple[str, str], np.ndarray],
    entries: Sequence[str],
    workloads: Sequence[str],
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (`percentile_interval`) of `statistic` over bootstrap medians
    (see `resample_medians`); `statistic` maps (batch, entries, workloads) to (batch, ...)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    point = statistic(observed_medians(values, entries, workloads)[None])[0]
    t = resample_medians(values, entries, workloads, n_resamples, seed)
    return percentile_interval(statistic(t), point, confidence)


def geometric_mean_speedup(
    times: np.ndarray, reference: int, budgets: Sequence[float | None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(speedup, number of workloads used), both (..., entries): exp(mean_w log(t_ref,w / t_s,w)) over
    the last axis, with ∞ replaced by budget + 1 s where the budget is known."""
    t = np.where(np.isnan(times), np.inf, np.asarray(times, dtype=np.float64))
    if budgets is not None:
        cap = np.array([np.inf if b is None or not np.isfinite(b) else b + 1.0 for b in budgets])
        t = np.where(np.isinf(t) & np.isfinite(cap), cap, t)
    ref = t[..., reference : reference + 1, :]
    usable = np.isfinite(t) & np.isfinite(ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(usable, np.log(ref) - np.log(t), 0.0)
    n = usable.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        speedup = np.exp(logs.sum(axis=-1) / n)
    return np.where(n > 0, speedup, np.nan), n


@dataclass(frozen=True)
class Comparison:
    """Result of `compare`: is A faster than B on `workload`?"""

    workload: str
    a: str
    b: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    u_statistic: float
    prob_a_faster: float  # P(A's study faster than B's) + ½ P(tie), = U / (n_a n_b)
    p_value: float


def _rank_sum_p_value(x: np.ndarray, y: np.ndarray, u: float, seed: int = 0) -> float:
    """P(U_x <= u) when the labels of the pooled sample are exchangeable: exact over all
    splits when there are at most 50,000 of them, else from 20,000 seeded random splits."""
    ranks = stats.rankdata(np.concatenate([x, y]))  # mid-ranks for ties
    n, n_x = len(ranks), len(x)
    offset = n_x * (n_x + 1) / 2
    if math.comb(n, n_x) <= 50_000:
        sums = np.array([ranks[list(c)].sum() for c in itertools.combinations(range(n), n_x)])
        return float(np.mean(sums - offset <= u + 1e-9))
    rng = np.random.default_rng(seed)
    draws = np.argsort(rng.random((20_000, n)), axis=1)[:, :n_x]
    hits = np.sum(ranks[draws].sum(axis=1) - offset <= u + 1e-9)
    return float((hits + 1) / (len(draws) + 1))


def compare(
    a_values: np.ndarray, b_values: np.ndarray, *, workload: str = "", a: str = "A", b: str = "B"
) -> Comparison:
    """One-sided Mann-Whitney U test of "A's per-study times are smaller than B's", with the
    permutation p-value P(U <= observed U) (exact for small samples; ∞ = not reached ranks last,
    ties get mid-ranks). U counts the pairs where A is slower, ties half."""
    x = np.asarray(a_values, dtype=np.float64)
    y = np.asarray(b_values, dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        return Comparison(workload, a, b, len(x), len(y), np.nan, np.nan, np.nan, np.nan, np.nan)
    x, y = np.where(np.isnan(x), np.inf, x), np.where(np.isnan(y), np.inf, y)
    ranks = stats.rankdata(np.concatenate([x, y]))
    u = float(ranks[: len(x)].sum() - len(x) * (len(x) + 1) / 2)
    return Comparison(
        workload=workload,
        a=a,
        b=b,
        n_a=len(x),
        n_b=len(y),
        median_a=float(np.median(x)),
        median_b=float(np.median(y)),
        u_statistic=u,
        prob_a_faster=1.0 - u / (len(x) * len(y)),
        p_value=_rank_sum_p_value(x, y, u),
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    ok = ~np.isnan(p)
    out = np.full_like(p, np.nan)
    q = p[ok]
    order = np.argsort(q)
    m = len(q)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    result = np.empty(m)
    result[order] = adjusted
    out[ok] = result
    return out


def comparisons_table(
    values: Mapping[tuple[str, str], np.ndarray], entries: Sequence[str], workloads: Sequence[str], reference: str
) -> pd.DataFrame:
    """`compare(entry, reference)` for every other entry and workload, with Holm-adjusted
    p-values within each entry's family of workloads."""
    rows = []
    for e in entries:
        if e == reference:
            continue
        for w in workloads:
            c = compare(
                values.get((e, w), np.array([])), values.get((reference, w), np.array([])), workload=w, a=e, b=reference
            )
            rows.append(c.__dict__)
    table = pd.DataFrame(rows, columns=list(Comparison.__dataclass_fields__))
    if len(table):
        table["p_holm"] = table.groupby("a")["p_value"].transform(lambda p: holm(p.to_numpy()))
    else:
        table["p_holm"] = []
    return table

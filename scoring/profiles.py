"""Performance ratios, performance profiles and the benchmark score.

For entries s and the suite's n workloads w, with t[s, w] the median time-to-target (∞ if not
reached or not run):

    r[s, w] = t[s, w] / min_s' t[s', w]                          (performance ratio, >= 1)
    ρ_s(τ) = |{w : r[s, w] <= τ}| / n                            (performance profile)
    B_s = ∫_1^{r_max} ρ_s(τ) dτ / (r_max - 1)                    (benchmark score, in [0, 1])

The denominator n counts every workload of the suite, including those no entry solved.
Ratios above r_max get no credit. Two ways to integrate:

* exact: ρ_s is a step function, so B_s = Σ_w max(0, r_max - r[s, w]) / (n (r_max - 1)).
* AlgoPerf: ρ_s on τ = linspace(1, r_max, num_points), integrated with the trapezoid rule.

Held-out variants (AlgoPerf v0.5): given {variant: base}, before the ratios

1. a variant's time counts only where its base workload was reached (else ∞);
2. every time above r_max × the fastest time on its workload becomes ∞;
3. a base workload's time counts only where its variant's time is still finite (else ∞);

and only base workloads are scored. (AlgoPerf's scoring code, `compute_performance_profiles`
in mlcommons/submissions_algorithms; its documentation calls this "within 4x of the fastest".)

Every function takes times of shape (..., entries, workloads), so a whole batch of bootstrap
resamples is scored at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2.0 names it trapz


def held_out_rule(
    times: np.ndarray, workloads: Sequence[str], held_out: Mapping[str, str], r_max: float = 4.0
) -> np.ndarray:
    """Apply the held-out-variant rule (steps 1-3 above) to `times` (..., entries, workloads)."""
    t = np.where(np.isnan(times), np.inf, times)
    column = {w: i for i, w in enumerate(workloads)}
    pairs = [(column[v], column[b]) for v, b in held_out.items() if v in column and b in column]
    if not pairs:
        return t
    for v, b in pairs:
        t[..., v] = np.where(np.isfinite(t[..., b]), t[..., v], np.inf)
    best = t.min(axis=-2, keepdims=True)
    t = np.where(t > r_max * best, np.inf, t)
    for v, b in pairs:
        t[..., b] = np.where(np.isfinite(t[..., v]), t[..., b], np.inf)
    return t


def performance_ratios(times: np.ndarray) -> np.ndarray:
    """r[s, w] = t[s, w] / min_s t[s, w]; ∞ where t is ∞ or NaN (not reached / not run)."""
    t = np.where(np.isnan(times), np.inf, times)
    best = t.min(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(t == best, 1.0, t / best)
    return np.where(np.isfinite(t), r, np.inf)


def performance_profile(ratios: np.ndarray, taus: np.ndarray, n_workloads: int) -> np.ndarray:
    """ρ_s(τ) for each τ in `taus`: shape (..., entries, len(taus))."""
    taus = np.asarray(taus, dtype=np.float64)
    return (ratios[..., :, :, None] <= taus).sum(axis=-2) / n_workloads


def algoperf_taus(r_max: float = 4.0, num_points: int = 100) -> np.ndarray:
    """AlgoPerf's grid: numpy.linspace(1, r_max, num_points)."""
    return np.linspace(1.0, r_max, num_points)


def score_exact(ratios: np.ndarray, n_workloads: int, r_max: float = 4.0) -> np.ndarray:
    """B_s = Σ_w max(0, r_max - r[s, w]) / (n (r_max - 1)), the exact integral of ρ_s."""
    credit = np.clip(r_max - np.maximum(ratios, 1.0), 0.0, None)
    credit = np.where(np.isfinite(ratios), credit, 0.0)
    return credit.sum(axis=-1) / (n_workloads * (r_max - 1.0))


def score_grid(ratios: np.ndarray, n_workloads: int, r_max: float = 4.0, num_points: int = 100) -> np.ndarray:
    """B_s with ρ_s on AlgoPerf's grid, integrated by the trapezoid rule, over (r_max - 1)."""
    taus = algoperf_taus(r_max, num_points)
    rho = performance_profile(ratios, taus, n_workloads)
    return trapezoid(rho, x=taus, axis=-1) / (taus[-1] - taus[0])


def benchmark_scores(
    times: np.ndarray,
    workloads: Sequence[str],
    suite: Sequence[str],
    *,
    mode: str = "exact",
    held_out: Mapping[str, str] | None = None,
    r_max: float = 4.0,
    num_points: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (..., entries), ratios (..., entries, len(suite))) from times whose last axis
    follows `workloads`; only the `suite` (base) workloads are scored, over n = len(suite)."""
    if r_max <= 1:
        raise ValueError(f"r_max must be > 1, got {r_max}")
    t = held_out_rule(np.asarray(times, dtype=np.float64), workloads, held_out or {}, r_max)
    column = {w: i for i, w in enumerate(workloads)}
    missing = [w for w in suite if w not in column]
    if missing:
        raise ValueError(f"suite workloads {missing} are not among the timed workloads {list(workloads)}")
    base = t[..., [column[w] for w in suite]]
    ratios = performance_ratios(base)
    n = len(suite)
    if mode == "exact":
        scores = score_exact(ratios, n, r_max)
    elif mode == "algoperf":
        scores = score_grid(ratios, n, r_max, num_points)
    else:
        raise ValueError(f"mode must be 'exact' or 'algoperf', got {mode!r}")
    return scores, ratios


def profile_steps(ratios_row: np.ndarray, n_workloads: int, r_max: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (x, y) of one entry's exact profile on [1, r_max], for a steps-post plot."""
    r = np.sort(ratios_row[np.isfinite(ratios_row) & (ratios_row <= r_max)])
    x = np.concatenate([[1.0], np.maximum(r, 1.0), [r_max]])
    y = np.concatenate([[np.sum(r <= 1.0)], np.arange(1, len(r) + 1), [len(r)]]) / n_workloads
    return x, y

"""From run records to a leaderboard: scores with bootstrap intervals, speedups, comparisons.

    runs = load_runs(["experiments/my_sweep"])
    board = score_runs(runs, ScoringConfig(mode="exact"), reference="baseline")
    print(board.table)

`ScoringConfig.algoperf("0.5")` reproduces AlgoPerf's scoring: its base workloads as the suite,
its held-out variants, its grid-and-trapezoid integral and its per-study trial choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scoring import contention, profiles, stats
from scoring.ingest import Runs
from scoring.targets import algoperf_targets
from scoring.time_to_target import median_over_studies, study_results, study_values, trial_results

EXPLICIT_LISTS = ("suite", "held_out")


class UnrunWorkloads(ValueError):
    """Workloads of a list the caller chose (`kind`: "suite" or "held_out") that no entry ran."""

    def __init__(self, kind: str, workloads: Sequence[str]) -> None:
        self.kind = kind
        self.workloads = list(workloads)
        what = "suite workload" if kind == "suite" else "held-out variant"
        names = ", ".join(self.workloads)
        if len(self.workloads) == 1:
            problem = f"{what} {names} has no runs from any entry (every entry would count as not reaching it)"
        else:
            problem = f"{what}s {names} have no runs from any entry (every entry would count as not reaching them)"
        lists = "suite" if kind == "suite" else "held-out variants"
        super().__init__(f"{problem}; leave {'it' if len(self.workloads) == 1 else 'them'} out of the {lists}")


@dataclass(frozen=True)
class ScoringConfig:
    """How to score. `suite`: the base workloads (default: every workload seen that is not a
    held-out variant); `held_out`: {variant: base workload}; `expected_studies`: count missing
    studies as ∞ up to this number (default: take the median over the studies present).

    `explicit` says which of "suite" and "held_out" the caller chose (both, for a config built
    by hand). A workload of a chosen list that no entry ran is an error (`UnrunWorkloads`): it
    would only score every entry as not reaching it. One of a default list (AlgoPerf's, from
    `ScoringConfig.algoperf`) is left out with a note, as AlgoPerf's published v0.6 leaderboard
    leaves out `finewebedu_lm`, which no v0.6 submission ran."""

    mode: str = "exact"
    r_max: float = 4.0
    num_points: int = 100
    suite: tuple[str, ...] | None = None
    held_out: Mapping[str, str] = field(default_factory=dict)
    expected_studies: int | None = None
    explicit: frozenset[str] = frozenset(EXPLICIT_LISTS)

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "algoperf"):
            raise ValueError(f"mode must be 'exact' or 'algoperf', got {self.mode!r}")
        if not self.r_max > 1:
            raise ValueError(f"r_max must be > 1, got {self.r_max}")
        if self.num_points < 2:
            raise ValueError(f"num_points must be >= 2, got {self.num_points}")
        if self.expected_studies is not None and self.expected_studies < 1:
            raise ValueError(f"expected_studies must be >= 1, got {self.expected_studies}")
        unknown = set(self.explicit) - set(EXPLICIT_LISTS)
        if unknown:
            raise ValueError(f"explicit names {sorted(unknown)}; accepted: {', '.join(EXPLICIT_LISTS)}")

    @classmethod
    def algoperf(cls, version: str = "0.6", **overrides) -> ScoringConfig:
        """AlgoPerf-compatible scoring for AlgoPerf `version` ('0.5' or '0.6'): its suite and
        held-out variants unless `overrides` name them (a workload of AlgoPerf's lists that no
        entry ran is left out with a note; of a list named here, it is an error)."""
        targets = algoperf_targets(version)
        settings = dict(mode="algoperf", suite=targets.base_workloads, held_out=targets.held_out_map())
        settings["explicit"] = frozenset(k for k in EXPLICIT_LISTS if k in overrides)
        settings.update(overrides)
        return cls(**settings)


@dataclass
class Leaderboard:
    """Scores and the tables behind them. `table` has one row per entry (best first)."""

    config: ScoringConfig
    suite: list[str]
    table: pd.DataFrame
    times: pd.DataFrame  # entry × workload, median time-to-target (NaN: not run, ∞: not reached)
    times_low: pd.DataFrame
    times_high: pd.DataFrame
    steps: pd.DataFrame
    ratios: pd.DataFrame  # entry × suite workload, after the held-out rule
    step_ratios: pd.DataFrame
    profiles: pd.DataFrame  # entry × τ on linspace(1, r_max, num_points)
    studies: pd.DataFrame
    trials: pd.DataFrame
    comparisons: pd.DataFrame
    reference: str | None
    confidence: float = 0.95
    n_bootstrap: int = 1000
    seed: int = 0
    warnings: list[str] = field(default_factory=list)
    held_out: dict[str, str] = field(default_factory=dict)  # {variant: base} as scored
    unrun: list[str] = field(default_factory=list)  # workloads of a default list that no entry ran, left out


def _suite(config: ScoringConfig, seen: Sequence[str], notes: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """(suite, {variant: base}, workloads left out because no entry ran them) for `config` and the
    workloads `seen` in the runs; see `ScoringConfig` for what happens to a workload nobody ran."""
    held_out = dict(config.held_out)
    if config.suite is not None:
        suite = list(config.suite)
    else:
        suite = sorted(w for w in seen if w not in held_out)
    unrun_suite = [w for w in suite if w not in seen]
    if unrun_suite and "suite" in config.explicit:
        raise UnrunWorkloads("suite", unrun_suite)
    suite = [w for w in suite if w in seen]
    held_out = {v: b for v, b in held_out.items() if b in suite}
    unrun_variants = [v for v in held_out if v not in seen]
    if unrun_variants and "held_out" in config.explicit:
        raise UnrunWorkloads("held_out", unrun_variants)
    for w in unrun_suite:
        notes.append(
            f"suite workload {w} has no runs from any entry: left out, so the suite has {len(suite)} workloads "
            "(counting it would only score every entry as not reaching it)"
        )
    for v in unrun_variants:
        notes.append(
            f"held-out variant {v} has no runs from any entry: left out, so {held_out[v]} is scored "
            "without the held-out rule (counting it would void every entry's time on its base)"
        )
    held_out = {v: b for v, b in held_out.items() if v in seen}
    ignored = sorted(set(seen) - set(suite) - set(held_out))
    if ignored:
        notes.append(f"workloads outside the suite, not scored: {', '.join(ignored)}")
    return suite, held_out, unrun_suite + unrun_variants


def _study_count_notes(studies: pd.DataFrame, config: ScoringConfig) -> list[str]:
    counts = studies.groupby(["entry", "workload"]).size()
    if counts.empty:
        return []
    notes = []
    expected = config.expected_studies or int(counts.max())
    short = counts[counts < expected]
    for (entry, workload), n in short.items():
        rule = "the missing ones count as ∞" if config.expected_studies else "median over those present"
        notes.append(f"{entry} on {workload}: {n} of {expected} studies ({rule})")
    return notes


def score_runs(
    runs: Runs,
    config: ScoringConfig | None = None,
    *,
    reference: str | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Leaderboard:
    """Score every entry in `runs` (see the module docstrings of `time_to_target`, `profiles`
    and `stats` for the definitions). `reference` is the entry speedups and significance tests
    compare against (default: an entry named 'baseline', else the top-scoring entry)."""
    config = config or ScoringConfig()
    notes = list(runs.warnings)
    trials = trial_results(runs)
    bad = trials[~trials["summary_agrees"]]
    for _, row in bad.head(20).iterrows():
        notes.append(
            f"{row['trial_dir']}: summary.json says time_to_target={row['summary_time_to_target']}, "
            f"the evaluations say {row['time_to_target']}"
        )
    contended = contention.contention_note(trials)
    if contended:
        notes.append(contended)
    studies = study_results(trials, config.mode)
    entries = sorted(trials["entry"].astype(str).unique())
    if not entries:
        raise ValueError("no trials to score")
    seen = sorted(trials["workload"].astype(str).unique())
    suite, held_out, unrun = _suite(config, seen, notes)
    if not suite:
        raise ValueError(
            f"no entry ran any workload of the suite ({', '.join(unrun) or 'empty'}); the runs are of "
            f"{', '.join(seen)}: choose the suite among those (--suite)"
        )
    columns = suite + [v for v in held_out if v not in suite]
    notes.extend(_study_count_notes(studies[studies["workload"].isin(columns)], config))

    time_values = study_values(studies, "time", config.expected_studies)
    step_values = study_values(studies, "steps", config.expected_studies)
    times = median_over_studies(studies, "time", config.expected_studies).reindex(index=entries, columns=columns)
    steps = median_over_studies(studies, "steps", config.expected_studies).reindex(index=entries, columns=columns)
    for entry in entries:
        missing = [w for w in suite if np.isnan(times.loc[entry, w])]
        if missing:
            notes.append(f"{entry} has no runs on {', '.join(missing)} (counted as not reached)")

    def score(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return profiles.benchmark_scores(
            t, columns, suite, mode=config.mode, held_out=held_out, r_max=config.r_max, num_points=config.num_points
        )

    time_scores, time_ratios = score(times.to_numpy())
    step_scores, step_ratios = score(steps.to_numpy())
    order = np.lexsort((np.array(entries), -step_scores, -time_scores))
    if reference is None:
        reference = "baseline" if "baseline" in entries else entries[order[0]]
    elif reference not in entries:
        raise ValueError(f"reference entry {reference!r} not found; entries: {', '.join(entries)}")
    ref = entries.index(reference)
    budgets = _budgets(trials, suite)

    def boot(values, statistic):
        return stats.bootstrap(
            values, entries, columns, statistic, n_resamples=n_bootstrap, seed=seed, confidence=confidence
        )

    score_lo, score_hi = boot(time_values, lambda t: score(t)[0])
    step_lo, step_hi = boot(step_values, lambda t: score(t)[0])
    base_idx = [columns.index(w) for w in suite]
    speedup, used = stats.geometric_mean_speedup(times.to_numpy()[:, base_idx], ref, budgets)
    speed_lo, speed_hi = boot(time_values, lambda t: stats.geometric_mean_speedup(t[..., base_idx], ref, budgets)[0])
    times_lo, times_hi = boot(time_values, lambda t: t)

    reached = np.isfinite(time_ratios) & (time_ratios <= config.r_max)
    table = pd.DataFrame(
        {
            "entry": entries,
            "score": time_scores,
            "score_low": score_lo,
            "score_high": score_hi,
            "steps_score": step_scores,
            "steps_score_low": step_lo,
            "steps_score_high": step_hi,
            "workloads_within_r_max": reached.sum(axis=1),
            "suite_size": len(suite),
            "speedup_vs_reference": speedup,
            "speedup_low": speed_lo,
            "speedup_high": speed_hi,
            "speedup_workloads": used,
            "frameworks": [
                ", ".join(sorted(trials.loc[trials["entry"] == e, "framework"].astype(str).unique())) for e in entries
            ],
            "trials": [int((trials["entry"] == e).sum()) for e in entries],
            "contended_trials": [int(trials.loc[trials["entry"] == e, "contended"].sum()) for e in entries],
        }
    )
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", table["score"].rank(ascending=False, method="min").astype(int))

    taus = profiles.algoperf_taus(config.r_max, config.num_points)
    profile = pd.DataFrame(profiles.performance_profile(time_ratios, taus, len(suite)), index=entries, columns=taus)
    comparisons = (
        stats.comparisons_table(time_values, entries, suite, reference) if len(entries) > 1 else pd.DataFrame()
    )
    return Leaderboard(
        config=config,
        suite=suite,
        table=table,
        times=times,
        times_low=pd.DataFrame(times_lo, index=entries, columns=columns),
        times_high=pd.DataFrame(times_hi, index=entries, columns=columns),
        steps=steps,
        ratios=pd.DataFrame(time_ratios, index=entries, columns=suite),
        step_ratios=pd.DataFrame(step_ratios, index=entries, columns=suite),
        profiles=profile,
        studies=studies,
        trials=trials,
        comparisons=comparisons,
        reference=reference,
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        seed=seed,
        warnings=notes,
        held_out=held_out,
        unrun=unrun,
    )


def _budgets(trials: pd.DataFrame, suite: Sequence[str]) -> list[float | None]:
    """Each suite workload's largest recorded budget (max_allowed_runtime_sec), None if unknown."""
    budget = trials.groupby(trials["workload"].astype(str))["max_runtime_sec"].max()
    return [None if w not in budget or np.isnan(budget[w]) else float(budget[w]) for w in suite]

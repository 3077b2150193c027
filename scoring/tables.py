"""The leaderboard's tables as rows of display strings and sort keys, shared by the Markdown
and HTML reports, plus the tidy CSV tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.contention import MARK
from scoring.leaderboard import Leaderboard

MODE_TEXT = {
    "exact": "exact (closed-form integral of the profile; the fastest trial of each study)",
    "algoperf": (
        "AlgoPerf-compatible (profile on numpy.linspace(1, r_max, {num_points}) with the trapezoid rule; "
        "per study the trial whose first target-reaching evaluation comes earliest, ties to the smaller time)"
    ),
}


@dataclass
class Table:
    """Column headers and rows of (display text, sort key) cells; sort key None = text."""

    title: str
    headers: list[str]
    rows: list[list[tuple[str, float | str | None]]]
    note: str = ""


def seconds(value: float) -> str:
    """Seconds for display: '∞' when not reached, '—' when not run."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞"
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def steps_text(value: float) -> str:
    if value is None or math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else f"{value:,.0f}"


def interval(low: float, high: float, fmt=number) -> str:
    return f"[{fmt(low)}, {fmt(high)}]"


def describe_mode(board: Leaderboard) -> str:
    return MODE_TEXT[board.config.mode].format(num_points=board.config.num_points)


def leaderboard_table(board: Leaderboard) -> Table:
    """One row per entry, best first."""
    ci = f"{board.confidence:.0%} CI"
    headers = [
        "Rank",
        "Submission",
        "Score",
        ci,
        "Steps score",
        f"Steps {ci}",
        f"Workloads within {board.config.r_max:g}×",
        f"Speedup vs {board.reference}",
        f"Speedup {ci}",
        "Frameworks",
        "Trials",
    ]
    rows = []
    for r in board.table.itertuples():
        rows.append(
            [
                (str(r.rank), r.rank),
                (str(r.entry), None),
                (number(r.score, 4), r.score),
                (interval(r.score_low, r.score_high), r.score_low),
                (number(r.steps_score, 4), r.steps_score),
                (interval(r.steps_score_low, r.steps_score_high), r.steps_score_low),
                (f"{r.workloads_within_r_max}/{r.suite_size}", r.workloads_within_r_max),
                (number(r.speedup_vs_reference, 2) + "×", r.speedup_vs_reference),
                (interval(r.speedup_low, r.speedup_high, lambda v: number(v, 2)), r.speedup_low),
                (str(r.frameworks), None),
                (f"{r.trials} ({r.contended_trials} contended)" if r.contended_trials else str(r.trials), r.trials),
            ]
        )
    return Table("Leaderboard", headers, rows)


def times_table(board: Leaderboard, steps: bool = False) -> Table:
    """Entries × suite workloads: median time (or steps) to target, with its interval for time."""
    entries = list(board.table["entry"])
    data = board.steps if steps else board.times
    ratios = board.step_ratios if steps else board.ratios
    marked = _contended_cells(board, "steps_contended" if steps else "time_contended")
    rows = []
    for e in entries:
        row = [(e, None)]
        for w in board.suite:
            v = float(data.loc[e, w])
            r = float(ratios.loc[e, w])
            if steps:
                text = steps_text(v)
            else:
                text = seconds(v)
                if np.isfinite(v):
                    text += " " + interval(float(board.times_low.loc[e, w]), float(board.times_high.loc[e, w]), seconds)
            if np.isfinite(r) and np.isfinite(v):
                text += f" ({r:.2f}×)"
            if (e, w) in marked:
                text += f" {MARK}"
            row.append((text, v if not np.isnan(v) else math.inf))
        rows.append(row)
    what = "steps" if steps else "seconds"
    note = (
        f"Median over studies of the {what} to reach the validation target; "
        + ("" if steps else f"{board.confidence:.0%} bootstrap interval in brackets; ")
        + "(r×) = ratio to the fastest entry after the held-out rule; ∞ = not reached, — = not run."
        + (f" {MARK} = at least one study's {what} come from a trial run on a contended machine." if marked else "")
    )
    return Table(f"{'Steps' if steps else 'Time'} to target", ["Submission", *board.suite], rows, note)


def _contended_cells(board: Leaderboard, column: str) -> set[tuple[str, str]]:
    """(entry, workload) pairs where some study's counted trial was contended."""
    s = board.studies
    if column not in s.columns:
        return set()
    hit = s[s[column].astype(bool)]
    return set(zip(hit["entry"].astype(str), hit["workload"].astype(str)))


def profiles_table(rows: pd.DataFrame) -> Table:
    """Machine profiles and scaled budgets per workload (`machine_profiles.profile_workloads`);
    no table when no budget was scaled."""
    if rows.empty:
        return Table("Machine profiles and budgets", [], [])
    headers = [
        "Profile", "Created", "Workload", "This machine s/step", "Reference s/step", "Budget scale", "Budget", "Trials",
    ]

    def value(v, fmt):
        if v is None:
            return ("—", None)
        return (fmt(v), v) if isinstance(v, (int, float)) else (str(v), None)

    out = []
    for r in rows.itertuples():
        profile = r.profile_key if r.source == "profile" else "none (--budget_scale)"
        out.append(
            [
                (profile, None),
                (str(r.created or "—"), None),
                (str(r.workload), None),
                value(r.seconds_per_step, lambda v: f"{v:.4g}"),
                value(r.reference_seconds_per_step, lambda v: f"{v:.4g}"),
                value(r.budget_scale, lambda v: f"{v:g}"),
                value(r.budget_sec, seconds),
                (str(r.trials), r.trials),
            ]
        )
    note = (
        "A workload's budget on a machine is its documented budget × the budget scale = this machine's "
        "reference seconds per step ÷ the calibration machine's (the NAdamW baseline's timed step), so the "
        "baseline gets the same number of steps everywhere; targets do not change. Trials are scored only "
        "against trials of the same profile unless --allow_mixed_profiles."
    )
    return Table("Machine profiles and budgets", headers, out, note)


def comparisons_table(board: Leaderboard) -> Table:
    """Significance of "A reaches the target faster than the reference" per workload."""
    rows = []
    c = board.comparisons
    if c is None or c.empty:
        return Table("Is it faster than the reference?", [], [])
    for r in c.itertuples():
        rows.append(
            [
                (str(r.a), None),
                (str(r.workload), None),
                (f"{r.n_a} vs {r.n_b}", r.n_a),
                (f"{seconds(r.median_a)} vs {seconds(r.median_b)}", r.median_a),
                (number(r.prob_a_faster, 2), r.prob_a_faster),
                (number(r.p_value, 4), r.p_value),
                (number(r.p_holm, 4), r.p_holm),
            ]
        )
    headers = ["Submission", "Workload", "Studies", "Median time", "P(faster)", "p", "p (Holm)"]
    note = (
        f"One-sided Mann-Whitney U test per workload of each entry's per-study times against "
        f"{board.reference}'s (exact permutation p-value; ∞ = not reached ranks last); P(faster) = "
        "U / (n_a n_b); Holm's adjustment within each entry's workloads."
    )
    return Table(f"Faster than {board.reference}?", headers, rows, note)


def tidy_times(board: Leaderboard) -> pd.DataFrame:
    """Long table: entry, workload, median time and steps, interval, ratios, studies reached."""
    counts = board.studies.groupby(["entry", "workload"]).agg(
        studies=("study", "size"), studies_reached=("reached", "sum"), contended_trials=("contended_trials", "sum")
    )
    rows = []
    for e in board.times.index:
        for w in board.times.columns:
            in_suite = w in board.suite
            n, k, c = counts.loc[(e, w)] if (e, w) in counts.index else (0, 0, 0)
            rows.append(
                {
                    "entry": e,
                    "workload": w,
                    "in_suite": in_suite,
                    "time_to_target": board.times.loc[e, w],
                    "time_low": board.times_low.loc[e, w],
                    "time_high": board.times_high.loc[e, w],
                    "steps_to_target": board.steps.loc[e, w],
                    "ratio": board.ratios.loc[e, w] if in_suite else np.nan,
                    "steps_ratio": board.step_ratios.loc[e, w] if in_suite else np.nan,
                    "studies": int(n),
                    "studies_reached": int(k),
                    "contended_trials": int(c),
                }
            )
    return pd.DataFrame(rows)

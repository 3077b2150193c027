"""The leaderboard's tables as rows of display strings and sort keys, shared by the Markdown
and HTML reports, plus the tidy CSV tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.leaderboard import Leaderboard

MODE_TEXT = {
    "exact": "exact (closed-form integral of the profile; the fastest trial of each study)",
    "algoperf": (
        "AlgoPerf-compatible (profile on numpy.linspace(1, r_max, {num_points}) with the trapezoid rule; "
        "per study the trial whose first target-reaching evaluation comes earliest)"
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
                (str(r.trials), r.trials),
            ]
        )
    return Table("Leaderboard", headers, rows)


def times_table(board: Leaderboard, steps: bool = False) -> Table:
    """Entries × suite workloads: median time (or steps) to target, with its interval for time."""
    entries = list(board.table["entry"])
    data = board.steps if steps else board.times
    ratios = board.step_ratios if steps else board.ratios
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
            row.append((text, v if not np.isnan(v) else math.inf))
        rows.append(row)
    what = "steps" if steps else "seconds"
    note = (
        f"Median over studies of the {what} to reach the validation target; "
        + ("" if steps else f"{board.confidence:.0%} bootstrap interval in brackets; ")
        + "(r×) = ratio to the fastest entry after the held-out rule; ∞ = not reached, — = not run."
    )
    return Table(f"{'Steps' if steps else 'Time'} to target", ["Submission", *board.suite], rows, note)


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
        studies=("study", "size"), studies_reached=("reached", "sum")
    )
    rows = []
    for e in board.times.index:
        for w in board.times.columns:
            in_suite = w in board.suite
            n, k = counts.loc[(e, w)] if (e, w) in counts.index else (0, 0)
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
                }
            )
    return pd.DataFrame(rows)

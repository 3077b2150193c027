"""Figures for the report (matplotlib, Agg backend, no pyplot state).

* `plot_profiles` — ρ_s(τ) for every entry on [1, r_max].
* `plot_time_to_target` — per workload, each entry's median time-to-target with its interval.
* `plot_curves` — one workload's validation metric against timed seconds, target drawn.

Names (entries, workloads, metrics) are data: every text is drawn as plain text, never as
mathtext or TeX, so a `$` in a name is a dollar sign (see `plain_text`).
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from scoring.leaderboard import Leaderboard  # noqa: E402
from scoring.profiles import profile_steps  # noqa: E402

MAX_BACKGROUND_CURVES = 40  # per entry and workload, besides the trials that count
PLAIN_TEXT = {"text.usetex": False, "text.parse_math": False}


def plain_text(func):
    """Run `func` with PLAIN_TEXT settings, whatever the user's matplotlibrc says: texts made then,
    including tick labels made while saving, take no `$...$` math and no TeX."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(PLAIN_TEXT):
            return func(*args, **kwargs)

    return wrapper


def _colors(entries: list[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(entries) <= 10 else "tab20"]
    return {e: cmap(i % cmap.N) for i, e in enumerate(entries)}


def _ordered_entries(board: Leaderboard) -> list[str]:
    return list(board.table["entry"])


@plain_text
def plot_profiles(board: Leaderboard, steps: bool = False) -> Figure:
    """Performance profiles ρ_s(τ) (by time, or by steps with `steps=True`), legend by score."""
    ratios = board.step_ratios if steps else board.ratios
    column = "steps_score" if steps else "score"
    entries = _ordered_entries(board)
    colors = _colors(entries)
    r_max, n = board.config.r_max, len(board.suite)
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    score = board.table.set_index("entry")[column]
    for entry in entries:
        r = ratios.loc[entry].to_numpy(dtype=np.float64)
        label = f"{entry} ({score[entry]:.3f})"
        if board.config.mode == "exact":
            x, y = profile_steps(r, n, r_max)
            ax.step(x, y, where="post", label=label, color=colors[entry], lw=2)
        else:
            taus = board.profiles.columns.to_numpy(dtype=np.float64)
            rho = (r[:, None] <= taus).sum(axis=0) / n
            ax.plot(taus, rho, label=label, color=colors[entry], lw=2)
    ax.set_xlim(1, r_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"τ: {'steps' if steps else 'time'} to target relative to the fastest")
    ax.set_ylabel("fraction of workloads within τ")
    ax.set_title(f"Performance profiles by {'steps' if steps else 'time'} ({n} workloads)")
    ax.grid(alpha=0.3)
    ax.legend(title="entry (score)", fontsize=8, loc="lower right")
    return fig


@plain_text
def plot_time_to_target(board: Leaderboard) -> Figure:
    """Per suite workload: median time-to-target of each entry with its bootstrap interval;
    entries that did not reach the target are marked at the right edge."""
    entries = _ordered_entries(board)
    colors = _colors(entries)
    workloads = board.suite
    cols = min(3, len(workloads))
    rows = math.ceil(len(workloads) / cols)
    fig = Figure(figsize=(4.2 * cols, 0.45 * len(entries) * rows + 1.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    y = np.arange(len(entries))[::-1]
    for ax, workload in zip(axes.flat, workloads):
        t = board.times.loc[entries, workload].to_numpy(dtype=np.float64)
        lo = board.times_low.loc[entries, workload].to_numpy(dtype=np.float64)
        hi = board.times_high.loc[entries, workload].to_numpy(dtype=np.float64)
        finite = np.isfinite(t)
        edge = np.nanmax(np.where(np.isfinite(hi), hi, np.where(finite, t, np.nan))) if finite.any() else 1.0
        edge = edge * 1.15 if np.isfinite(edge) and edge > 0 else 1.0
        for i, entry in enumerate(entries):
            if finite[i]:
                upper = hi[i] if np.isfinite(hi[i]) else edge
                ax.errorbar(t[i], y[i], xerr=[[t[i] - lo[i]], [upper - t[i]]], fmt="o", color=colors[entry], capsize=3)
                if not np.isfinite(hi[i]):
                    ax.annotate("→∞", (edge, y[i]), fontsize=7, va="center", ha="right", color=colors[entry])
            else:
                label = "not run" if np.isnan(t[i]) else "not reached"
                ax.plot([edge], [y[i]], marker="x", color=colors[entry])
                ax.annotate(
                    label, (edge, y[i]), xytext=(-6, 0), textcoords="offset points", fontsize=7, va="center", ha="right"
                )
        ax.set_yticks(y, entries, fontsize=8)
        ax.set_xlim(0, edge * 1.02)
        ax.set_title(workload, fontsize=10)
        ax.set_xlabel("seconds to target (median over studies)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(workloads) :]:
        ax.set_visible(False)
    return fig


@plain_text
def plot_curves(evals: pd.DataFrame, board: Leaderboard, workload: str) -> Figure:
    """Validation target metric against timed seconds for `workload`: the trial that counts in
    each study drawn bold, up to MAX_BACKGROUND_CURVES other trials per entry drawn faint."""
    rows = evals[evals["workload"] == workload]
    trials = board.trials[board.trials["workload"].astype(str) == workload]
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if trials.empty:
        ax.set_title(f"{workload}: no trials")
        return fig
    metric = str(trials["target_metric"].iloc[0])
    target = float(trials["validation_target"].iloc[0])
    direction = str(trials["direction"].iloc[0])
    studies = board.studies[board.studies["workload"] == workload]
    counted = {(str(r.entry), int(r.study), int(r.time_trial)) for r in studies.itertuples() if pd.notna(r.time_trial)}
    entries = [e for e in _ordered_entries(board) if e in set(trials["entry"].astype(str))]
    colors = _colors(_ordered_entries(board))
    x_all = rows["accumulated_submission_time"].to_numpy(dtype=np.float64)
    y_all = rows[metric].to_numpy(dtype=np.float64) if metric in rows.columns else np.full(len(rows), np.nan)
    tid = rows["trial_id"].to_numpy()
    bounds = np.flatnonzero(np.diff(tid)) + 1
    starts = np.concatenate([[0], bounds]) if len(tid) else np.array([], dtype=int)
    ends = np.concatenate([bounds, [len(tid)]]) if len(tid) else np.array([], dtype=int)
    info = board.trials.set_index("trial_id")
    entry_of = info["entry"].astype(str).to_dict()
    study_of = info["study"].to_dict()
    trial_of = info["trial"].to_dict()
    faint: dict[str, list] = {e: [] for e in entries}
    bold: dict[str, list] = {e: [] for e in entries}
    for a, b in zip(starts, ends):
        i = tid[a]
        entry = entry_of[i]
        segment = np.column_stack([x_all[a:b], y_all[a:b]])
        if (entry, int(study_of[i]), int(trial_of[i])) in counted:
            bold[entry].append(segment)
        elif len(faint[entry]) < MAX_BACKGROUND_CURVES:
            faint[entry].append(segment)
    for entry in entries:
        if faint[entry]:
            ax.add_collection(LineCollection(faint[entry], colors=[colors[entry]], linewidths=0.6, alpha=0.2))
        if bold[entry]:
            ax.add_collection(LineCollection(bold[entry], colors=[colors[entry]], linewidths=1.8, label=entry))
        else:
            ax.plot([], [], color=colors[entry], label=f"{entry} (not reached)")
    ax.autoscale_view()
    ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("timed seconds (accumulated_submission_time)")
    ax.set_ylabel(f"{metric} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax.set_title(f"{workload}: bold = the trial that counts in each study")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


@plain_text
def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure encoded as `fmt` ('png' or 'svg')."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer, format=fmt, dpi=110 if fmt == "png" else None, metadata={"Date": None} if fmt == "svg" else None
    )
    return buffer.getvalue()


def figure_files(fig: Figure, stem: Path) -> dict[Path, bytes]:
    """{path: bytes} for the PNG and SVG versions of `fig` at `stem`.png / `stem`.svg."""
    return {stem.with_suffix(f".{fmt}"): figure_bytes(fig, fmt) for fmt in ("png", "svg")}

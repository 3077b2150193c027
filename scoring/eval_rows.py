"""Evaluation rows: each row's target-metric value, and which rows are impossible.

A row is impossible when its `accumulated_submission_time` or `global_step` is missing, negative or
not finite, or decreases from the previous row of its trial with no preemption in between (AlgoPerf
appends the rows of a resumed run, which may go back to its checkpoint), or when its target metric
is -inf for a 'min' target (+inf for 'max'), which would meet any target. NaN metrics (a diverged
evaluation) and +inf for 'min' (-inf for 'max') are measurements that never reach the target.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from scoring.readers import ALGOPERF_EVALS, REQUIRED_COLUMNS, TIMETRIAL_EVALS, RunRecordError


def evals_path(trial_dir: str, layout: str) -> str:
    """The file holding a trial's evaluation rows."""
    return os.path.join(trial_dir, TIMETRIAL_EVALS if layout == "timetrial" else ALGOPERF_EVALS)


def target_metric_values(evals: pd.DataFrame) -> np.ndarray:
    """Each evaluation row's value of its trial's target metric (NaN where not measured)."""
    values = np.full(len(evals), np.nan)
    metric_of_row = evals["target_metric"]
    for metric in metric_of_row.cat.categories:
        if metric in evals.columns:
            rows = (metric_of_row == metric).to_numpy()
            values[rows] = evals[metric].to_numpy(dtype=np.float64)[rows]
    return values


def impossible_rows(evals: pd.DataFrame, trials: pd.DataFrame) -> list[RunRecordError]:
    """A `RunRecordError` naming the file and line of each trial's first impossible evaluation
    row (see the module docstring), in trial order; [] when every row is possible."""
    tid = evals["trial_id"].to_numpy()
    same_trial = np.concatenate([[False], tid[1:] == tid[:-1]])
    preempted = np.zeros(len(evals), dtype=bool)
    if "preemption_count" in evals.columns:
        count = evals["preemption_count"].to_numpy(dtype=np.float64)
        preempted[1:] = count[1:] > count[:-1]
    bad = np.zeros(len(evals), dtype=bool)
    for column in REQUIRED_COLUMNS:
        v = evals[column].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad |= ~np.isfinite(v) | (v < 0)
            bad[1:] |= (v[1:] < v[:-1]) & same_trial[1:] & ~preempted[1:]
    values = target_metric_values(evals)
    minimize = (trials["direction"] == "min").to_numpy()[tid]
    bad |= values == np.where(minimize, -np.inf, np.inf)
    rows = np.flatnonzero(bad)
    _, first = np.unique(tid[rows], return_index=True)
    return [_row_error(evals, trials, row, bool(same_trial[row] and not preempted[row])) for row in rows[first]]


def _row_error(evals: pd.DataFrame, trials: pd.DataFrame, row: int, continues: bool) -> RunRecordError:
    """The error for impossible evaluation row `row` (`continues`: the previous row is the same
    trial's, with no preemption between): its file, its line, what is wrong with it."""
    trial = trials.iloc[int(evals["trial_id"].iat[row])]
    path = evals_path(str(trial["trial_dir"]), str(trial["layout"]))
    line = int(evals["eval_index"].iat[row]) + (2 if trial["layout"] == "algoperf" else 1)  # CSV line 1: header
    return RunRecordError(path, f"line {line}: {_row_problem(evals, row, continues, str(trial['direction']))}")


def _row_problem(evals: pd.DataFrame, row: int, continues: bool, direction: str) -> str:
    """What makes evaluation row `row` impossible, in words."""
    for column in REQUIRED_COLUMNS:
        v = float(evals[column].iat[row])
        if np.isnan(v):
            return f"no {column}"
        if not np.isfinite(v) or v < 0:
            return f"{column} is {v}; it must be a finite number >= 0"
        previous = float(evals[column].iat[row - 1]) if continues else -np.inf
        if v < previous:
            return f"{column} {v} is less than the previous row's {previous}, with no preemption between"
    metric = str(evals["target_metric"].iat[row])
    return f"{metric} is {float(evals[metric].iat[row])}, which would meet any {direction!r} target"

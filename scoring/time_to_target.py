"""Time-to-target and steps-to-target: per trial, per study, and the median over studies.

For trial j with evaluations e = 0, 1, ... and validation target metric m_e:

    first(j) = min { e : m_e <= target }      (direction 'min'; >= for 'max'; NaN or ±∞ never meets it)
    T_j = accumulated_submission_time[first(j)],  S_j = global_step[first(j)]   (∞ if no such e)

Per study k the trial that counts is chosen by `mode`:

* "exact" — the truly fastest trial: T_k = min_j T_j (and, separately, S_k = min_j S_j).
* "algoperf" — AlgoPerf's rule: among trials that reach the target, the one whose first(j) is
  smallest; T_k and S_k are that trial's T_j and S_j. Ties on first(j) go to the smaller T_j
  (then the lower trial number). AlgoPerf itself breaks such ties by the order in which
  `os.listdir` returned the trial directories (`idxmin` over trials in that order), which depends
  on the filesystem; the smaller time is deterministic, and it is what AlgoPerf's published v0.6
  leaderboard took in the one tie that changes a published score (shampoo, study 0 of fastmri:
  trials 2 and 5 first reach the target at evaluation 7, at 841.2 s and 640.8 s; 640.8 s is the
  published one). AlgoPerf's published v0.5 scores (both rulesets) are the same under either
  rule to full precision, although its external-tuning logs hold 60 such ties.

Then t[s, w] = median_k T_k over the studies of entry s on workload w (∞ counts; with an even
number of studies the mean of the middle two, as numpy's median).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.eval_rows import target_metric_values
from scoring.ingest import Runs

MODES = ("exact", "algoperf")
STUDY_KEYS = ["entry", "workload", "study"]


def trial_results(runs: Runs) -> pd.DataFrame:
    """One row per trial: `reached`, `first_index`, `time_to_target`, `steps_to_target` (∞ if
    never reached), `best_validation`, `final_time`, `final_step`, plus the trial's metadata."""
    evals, trials = runs.evals, runs.trials
    tid = evals["trial_id"].to_numpy()
    values = target_metric_values(evals)
    target = trials["validation_target"].to_numpy()[tid]
    minimize = (trials["direction"] == "min").to_numpy()[tid]
    with np.errstate(invalid="ignore"):
        reached = np.where(minimize, values <= target, values >= target) & np.isfinite(values)

    n = len(trials)
    first_index = np.full(n, -1, dtype=np.int64)
    time = np.full(n, np.inf)
    steps = np.full(n, np.inf)
    hit_rows = np.flatnonzero(reached)
    hit_trials, first = np.unique(tid[hit_rows], return_index=True)
    rows = hit_rows[first]
    first_index[hit_trials] = evals["eval_index"].to_numpy()[rows]
    time[hit_trials] = evals["accumulated_submission_time"].to_numpy(dtype=np.float64)[rows]
    steps[hit_trials] = evals["global_step"].to_numpy(dtype=np.float64)[rows]

    signed = np.where(minimize, values, -values)
    best = pd.Series(signed).groupby(tid).min().reindex(range(n))
    sign = np.where((trials["direction"] == "min").to_numpy(), 1.0, -1.0)
    last = pd.DataFrame({"t": tid, "time": evals["accumulated_submission_time"], "step": evals["global_step"]})
    last = last.groupby("t").last().reindex(range(n))

    out = trials.drop(columns=["trial_dir", "root", "machine_profile"]).copy()
    out["reached"] = first_index >= 0
    out["first_index"] = first_index
    out["time_to_target"] = time
    out["steps_to_target"] = steps
    out["best_validation"] = best.to_numpy() * sign
    out["final_time"] = last["time"].to_numpy()
    out["final_step"] = last["step"].to_numpy()
    status = trials["status"].astype(object)
    settled = (status.notna() & (status != "running")).to_numpy()
    summary = np.nan_to_num(trials["summary_time_to_target"].to_numpy(), nan=np.inf)
    agrees = np.isclose(summary, time, rtol=1e-9, atol=1e-9)
    out["summary_agrees"] = np.where(settled, agrees, True)
    out["trial_dir"] = trials["trial_dir"]
    return out


def study_results(trials: pd.DataFrame, mode: str = "exact") -> pd.DataFrame:
    """One row per (entry, workload, study): the study's `time` and `steps` to target and which
    trial gave each (`time_trial`, `steps_trial`), chosen by `mode` (see the module docstring);
    `contended_trials` counts the study's trials flagged contended, and `time_contended`,
    `steps_contended` say whether the trial that gave the time (steps) was one."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    t = trials[[*STUDY_KEYS, "trial", "reached", "first_index", "time_to_target", "steps_to_target"]].copy()
    t["contended"] = trials["contended"].to_numpy(dtype=bool) if "contended" in trials else False
    for key in ("entry", "workload"):
        t[key] = t[key].astype(str)
    counts = t.groupby(STUDY_KEYS, sort=True).size().rename("n_trials")
    if mode == "exact":
        by_time = _first(t, ["time_to_target", "trial"])
        by_steps = _first(t, ["steps_to_target", "trial"])
    else:
        t["_unreached"] = ~t["reached"]
        # first(j) decides; a tie goes to the smaller time, not AlgoPerf's directory order (see above)
        by_time = by_steps = _first(t, ["_unreached", "first_index", "time_to_target", "trial"])
    out = pd.DataFrame(
        {
            "n_trials": counts,
            "reached": t.groupby(STUDY_KEYS, sort=True)["reached"].any(),
            "time": by_time["time_to_target"],
            "time_trial": by_time["trial"].where(np.isfinite(by_time["time_to_target"])),
            "steps": by_steps["steps_to_target"],
            "steps_trial": by_steps["trial"].where(np.isfinite(by_steps["steps_to_target"])),
            "contended_trials": t.groupby(STUDY_KEYS, sort=True)["contended"].sum(),
            "time_contended": by_time["contended"] & np.isfinite(by_time["time_to_target"]),
            "steps_contended": by_steps["contended"] & np.isfinite(by_steps["steps_to_target"]),
        }
    )
    out["time_trial"] = out["time_trial"].astype("Int64")
    out["steps_trial"] = out["steps_trial"].astype("Int64")
    return out.reset_index()


def _first(t: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    ordered = t.sort_values([*STUDY_KEYS, *order], kind="stable")
    return ordered.groupby(STUDY_KEYS, sort=True).first()


def study_values(
    studies: pd.DataFrame, value: str = "time", expected_studies: int | None = None
) -> dict[tuple[str, str], np.ndarray]:
    """{(entry, workload): per-study values}; missing studies count as ∞ up to `expected_studies`."""
    out = {}
    for (entry, workload), group in studies.groupby(["entry", "workload"], sort=True):
        v = group.sort_values("study")[value].to_numpy(dtype=np.float64)
        if expected_studies is not None and len(v) < expected_studies:
            v = np.concatenate([v, np.full(expected_studies - len(v), np.inf)])
        out[(entry, workload)] = v
    return out


def median_over_studies(
    studies: pd.DataFrame, value: str = "time", expected_studies: int | None = None
) -> pd.DataFrame:
    """t[s, w] = median over studies of `value` ("time" or "steps"): entries × workloads,
    NaN where an entry has no study on a workload."""
    values = study_values(studies, value, expected_studies)
    records = [(e, w, float(np.median(v))) for (e, w), v in values.items()]
    table = pd.DataFrame(records, columns=["entry", "workload", value])
    return table.pivot(index="entry", columns="workload", values=value)

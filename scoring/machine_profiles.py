"""Machine profiles: the budget scaling that runs are compared by, besides their hardware.

A mini-suite budget is scaled per machine (`harness/machine_profile.py`), so a time to target
means something only next to the trials of the same scaling. Each trial's `profile_key` (read in
`scoring/readers.py`) is its machine profile's id when a profile scaled its budget,
`budget_scale=<x>` when the user's --budget_scale did, and `none` when nothing did (older records,
AlgoPerf's layout, workloads without calibration). "none" and a profile are different keys.

Times are compared within a workload (a performance ratio divides one entry's time on a workload
by the best on it), so scoring refuses a workload whose trials have different keys, unless told
otherwise (`python -m scoring.report --allow_mixed_profiles`). Different workloads may have
different keys: a mini-suite sweep on one machine has its profile's id on the calibrated
workloads and "none" on a workload without calibration.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from scoring.ingest import Runs, count_phrase


GROUP_COLUMNS = ["workload", "profile_key", "description", "trials", "entries", "roots", "example"]


def profile_groups(runs: Runs, by_workload: bool = False) -> pd.DataFrame:
    """One row per profile key (per workload and profile key if `by_workload`): `workload` (None
    unless `by_workload`), `profile_key`, `description`, `trials`, `entries`, `roots`, `example`
    (a trial directory)."""
    t = runs.trials
    keys = [t["workload"].astype(str)] if by_workload else []
    rows = []
    for group_keys, group in t.groupby([*keys, t["profile_key"].astype(str)], sort=True):
        workload, key = group_keys if by_workload else (None, group_keys[0])
        first = group.iloc[0]
        source, scale = str(first["budget_scale_source"]), float(first["budget_scale"])
        rows.append(
            {
                "workload": workload,
                "profile_key": key,
                "description": _describe(source, key, _profile(first), scale),
                "trials": len(group),
                "entries": sorted(group["entry"].astype(str).unique()),
                "roots": sorted(group["root"].astype(str).unique()),
                "example": str(group["trial_dir"].iloc[0]),
            }
        )
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def mixed_profiles(runs: Runs) -> pd.DataFrame:
    """`profile_groups(runs, by_workload=True)` restricted to the workloads whose trials have more
    than one profile key (empty when every workload's trials share one)."""
    groups = profile_groups(runs, by_workload=True)
    counts = groups["workload"].map(groups["workload"].value_counts())
    return groups[counts > 1].reset_index(drop=True)


def _profile(trial: pd.Series) -> dict:
    text = trial["machine_profile"]
    return json.loads(text) if isinstance(text, str) else {}


def _describe(source: str, key: str, profile: dict, scale: float) -> str:
    if source == "profile":
        return f"machine profile {key} (created {profile.get('created', 'at an unknown date')})"
    if source == "flag":
        return f"no machine profile, budgets scaled by --budget_scale {scale:g}"
    return "no machine profile (budgets as documented, not scaled)"


def describe_profiles(groups: pd.DataFrame) -> str:
    """The report's one-line summary: each profile key in words with its trial count."""
    return "; ".join(f"{g.description}: {count_phrase(g.trials, 'trial')}" for g in groups.itertuples())


def mixed_profiles_message(mixed: pd.DataFrame) -> str:
    """For `mixed_profiles`' workloads, which runs come from which machine profile, in one line."""
    parts = []
    for workload, groups in mixed.groupby("workload", sort=True):
        listed = "; ".join(
            f"{g.description}: {g.trials} trials of {', '.join(g.entries)} under {', '.join(g.roots)}, e.g. {g.example}"
            for g in groups.itertuples()
        )
        parts.append(f"{workload}: {listed}")
    workloads = count_phrase(mixed["workload"].nunique(), "workload")
    return (
        f"run records of {workloads} come from different machine profiles (budgets scaled for different "
        "machines, or scaled and not), so their times are not comparable: " + "; ".join(parts)
    )


def profile_workloads(runs: Runs) -> pd.DataFrame:
    """One row per (profile key, workload) of the trials whose budget was scaled: `profile_key`,
    `source`, `created`, `workload`, `seconds_per_step` (this machine's), `reference_seconds_per_step`
    (the calibration machine's), `budget_scale` and `budget_sec` (as recorded; several values
    joined by ', ' if the trials differ), `trials`. Empty when no budget was scaled."""
    t = runs.trials[runs.trials["budget_scale_source"].astype(str) != "none"]
    rows = []
    for (key, workload), group in t.groupby([t["profile_key"].astype(str), t["workload"].astype(str)], sort=True):
        profiles = [json.loads(p) if isinstance(p, str) else {} for p in group["machine_profile"]]
        rows.append(
            {
                "profile_key": key,
                "source": str(group["budget_scale_source"].iloc[0]),
                "created": _distinct(p.get("created") for p in profiles),
                "workload": workload,
                "seconds_per_step": _distinct(p.get("seconds_per_step") for p in profiles),
                "reference_seconds_per_step": _distinct(p.get("reference_seconds_per_step") for p in profiles),
                "budget_scale": _distinct(group["budget_scale"]),
                "budget_sec": _distinct(group["max_runtime_sec"]),
                "trials": len(group),
            }
        )
    columns = [
        "profile_key", "source", "created", "workload", "seconds_per_step", "reference_seconds_per_step",
        "budget_scale", "budget_sec", "trials",
    ]
    return pd.DataFrame(rows, columns=columns)


def _distinct(values) -> float | str | None:
    """The one value all trials share (None if none recorded), or the distinct values joined."""
    seen = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if v not in seen:
            seen.append(v)
    if not seen:
        return None
    if len(seen) == 1:
        return seen[0]
    return ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in seen)

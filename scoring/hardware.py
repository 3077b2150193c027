"""Hardware classes: what runs are compared by.

A class is the accelerator model and count for accelerator runs (TimeTrial's `hardware.accelerator`
and `num_devices`, AlgoPerf's `gpu_model_name` and `gpu_count`), so a different host CPU does not
separate them (it is noted instead); CPU-only runs are classed by their full fingerprint.
"""

from __future__ import annotations

import pandas as pd

from scoring.ingest import Runs, count_phrase


def hardware_groups(runs: Runs) -> pd.DataFrame:
    """One row per hardware class (accelerator model and count for accelerator runs, the full
    fingerprint otherwise): its description, host CPUs with trial counts, trials, entries, run paths."""
    t = runs.trials
    rows = []
    for hw_class, group in t.groupby(t["hardware_class"].astype(str), sort=True):
        accelerator = _is_accelerator_class(group)
        cpu_only_desc = ", ".join(sorted(group["hardware_desc"].astype(str).unique()))
        rows.append(
            {
                "hardware_class": hw_class,
                "description": hw_class if accelerator else cpu_only_desc,
                "fingerprints": sorted(group["hardware"].astype(str).unique()),
                "host_cpus": _host_cpus(group) if accelerator else [],
                "trials": len(group),
                "entries": sorted(group["entry"].astype(str).unique()),
                "roots": sorted(group["root"].astype(str).unique()),
                "example": str(group["trial_dir"].iloc[0]),
            }
        )
    columns = ["hardware_class", "description", "fingerprints", "host_cpus", "trials", "entries", "roots", "example"]
    return pd.DataFrame(rows, columns=columns)


def _is_accelerator_class(group: pd.DataFrame) -> bool:
    """True when the class is an accelerator model and count (a CPU-only class is its fingerprint)."""
    return bool((group["hardware_class"].astype(str) != group["hardware"].astype(str)).all())


def _host_cpus(group: pd.DataFrame) -> list[tuple[str, int]]:
    """(host CPU, trial count) of an accelerator class's trials, most trials first."""
    counts = group["host_cpu"].astype(object).fillna("unknown CPU").astype(str).value_counts()
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def describe_hardware(group) -> str:
    """One hardware class in words: '8 x V100 (host CPUs differ, not compared: A (3 trials), B (2
    trials))', or a CPU description with its fingerprint."""
    if not group.host_cpus:
        return f"{group.description} (fingerprint {', '.join(group.fingerprints)})"
    note = host_cpu_note(group.host_cpus)
    return f"{group.description}" + (f" ({note})" if note else f" on {group.host_cpus[0][0]}")


def host_cpu_note(host_cpus: list[tuple[str, int]]) -> str | None:
    """'host CPUs differ, not compared: A (3 trials), B (2 trials)', or None for a single host CPU."""
    if len(host_cpus) < 2:
        return None
    listed = ", ".join(f"{cpu} ({count_phrase(n, 'trial')})" for cpu, n in host_cpus)
    return f"host CPUs differ, not compared: {listed}"


def mixed_hardware_message(groups: pd.DataFrame) -> str:
    """Which runs come from which hardware class, in one line."""
    parts = []
    for g in groups.itertuples():
        parts.append(
            f"{describe_hardware(g)}: {g.trials} trials of {', '.join(g.entries)} "
            f"under {', '.join(g.roots)}, e.g. {g.example}"
        )
    return (
        f"run records come from {len(groups)} different hardware classes (accelerator model and count "
        "for accelerator runs, the full fingerprint for CPU-only runs): " + "; ".join(parts)
    )

"""Contended trials: counted, noted, marked, or dropped before scoring.

A TimeTrial trial is flagged `contended` in its summary.json when other processes used the
machine's CPUs during too many of its timed steps (`harness/contention.py` says how it is
measured and where the threshold is); its times measure the machine's load as much as the
submission. By default contended trials are scored, with a note and a † in the report's time
tables where a study's counted trial was contended; `drop_contended` (the report's
--exclude_contended) leaves them out before scoring. AlgoPerf-layout runs record no contention.
"""

from __future__ import annotations

import pandas as pd

from scoring.ingest import Runs, count_phrase, select_trials

MARK = "†"


def contended_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """(entry, workload, trials, contended) for each pair with at least one contended trial."""
    t = pd.DataFrame(
        {"entry": trials["entry"].astype(str), "workload": trials["workload"].astype(str), "c": trials["contended"]}
    )
    counts = t.groupby(["entry", "workload"], sort=True)["c"].agg(trials="size", contended="sum").reset_index()
    return counts[counts["contended"] > 0].reset_index(drop=True)


def _listing(trials: pd.DataFrame) -> str:
    """'a on w_easy (2 of 6), b on w_hard (1 of 6)'."""
    return ", ".join(
        f"{r.entry} on {r.workload} ({r.contended} of {r.trials})" for r in contended_counts(trials).itertuples()
    )


def contention_note(trials: pd.DataFrame) -> str | None:
    """The warning for scored contended trials, or None if there are none."""
    n = int(trials["contended"].sum())
    if not n:
        return None
    return (
        f"{n} of {count_phrase(len(trials), 'trial')} ran on a contended machine (other processes used its CPUs "
        f"during their timed steps; see their summary.json): {_listing(trials)}; they are scored, and a study "
        f"time from one is marked {MARK} (python -m scoring.report --exclude_contended drops them)"
    )


def drop_contended(runs: Runs) -> tuple[Runs, int]:
    """(`runs` without its contended trials, how many were dropped); the returned runs' warnings
    gain a line saying so, with the count per entry and workload."""
    contended = runs.trials["contended"].to_numpy(dtype=bool)
    if not contended.any():
        return runs, 0
    kept = select_trials(runs, ~contended)
    kept.warnings.append(
        f"dropped {count_phrase(int(contended.sum()), 'contended trial')} of {len(contended)} before scoring "
        f"(--exclude_contended): {_listing(runs.trials)}"
    )
    return kept, int(contended.sum())


def describe_contention(trials: pd.DataFrame, dropped: int = 0) -> str:
    """The report's one-line summary of contention among the scored `trials`."""
    n = int(trials["contended"].sum())
    algoperf = int((trials["layout"].astype(str) == "algoperf").sum())
    if algoperf == len(trials) and not dropped:
        return "not recorded (AlgoPerf's layout has no contention figures)"
    unrecorded = f"; {count_phrase(algoperf, 'AlgoPerf-layout trial')} record none" if algoperf else ""
    if dropped:
        return f"{count_phrase(dropped, 'contended trial')} dropped before scoring (--exclude_contended){unrecorded}"
    if n:
        scored = f"scored, their study times marked {MARK}"
        return f"{n} of {count_phrase(len(trials), 'trial')} contended: {scored}{unrecorded}"
    return f"no trial flagged contended{unrecorded}"

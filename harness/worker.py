"""Run one trial from its directory, in this process: the unit of work of every executor.

    python -m harness.worker <trial_dir>

The trial is described entirely by `<trial_dir>/meta.json` (written by the planner). The worker
resumes from `<trial_dir>/checkpoint/latest.pt` when one exists. A submission's exception is
recorded as a failed trial with its traceback (exit status 1). Started by an executor, the worker
asks the kernel to kill it if its parent dies, so a killed sweep leaves no orphan trials.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

from harness.discovery import load_submission, load_workload
from harness.progress import TrialProgress
from harness.records import TrialRecord
from harness.trial import TrialOutcome, run_trial

PARENT_PID_VARIABLE = "TIMETRIAL_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the executor that started it dies (even by kill -9)."""
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before the request took effect
        os._exit(1)


def checkpoint_path(trial_dir: Path) -> Path:
    return trial_dir / "checkpoint" / "latest.pt"


def run_trial_dir(trial_dir: Path) -> TrialOutcome:
    """Run (or resume) the trial described by `trial_dir/meta.json`; its summary is written either way."""
    meta = json.loads((trial_dir / "meta.json").read_text())
    record = TrialRecord(trial_dir)
    workload = load_workload(meta["workload_ref"], meta["framework"], meta["data_dir"])
    submission = load_submission(meta["submission_path"], meta["framework"])
    label = f"{meta['workload']}/{meta['submission']} study_{meta['study']}/trial_{meta['trial']}"
    progress = TrialProgress(label, workload.target_metric_name, workload.validation_target_value, meta["budget_sec"])
    try:
        outcome = run_trial(
            workload, submission, meta["hparams"], meta["rng_seed"], meta["budget_sec"], record, progress,
            meta["max_global_steps"], checkpoint=checkpoint_path(trial_dir),
            eval_every_steps=meta.get("eval_every_steps"),
        )
        if outcome.unused_hyperparameters:
            print(f"warning: {label}: the submission never read hyperparameters "
                  f"{', '.join(outcome.unused_hyperparameters)} of its search space", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a failure outside the loop (progress display) fails the trial too
        outcome = TrialOutcome("running")
        outcome.fail(exc)
    finally:
        progress.close()
    record.write_summary(outcome.summary())
    return outcome


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m harness.worker <trial_dir>", file=sys.stderr)
        return 2
    die_with_parent()
    return 1 if run_trial_dir(Path(argv[1])).status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

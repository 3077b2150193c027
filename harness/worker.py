"""Run one trial from its directory, in this process: the unit of work of every executor.

    python -m harness.worker <trial_dir>

The trial is described entirely by `<trial_dir>/meta.json` (written by the planner). The worker
resumes from `<trial_dir>/checkpoint/latest.pt` when one exists. A submission's exception is
recorded as a failed trial with its traceback (exit status 1). The submission's code is imported
here, never by the planner, so the trial's limits cover its import too (an import error or hang
fails the trial), and only if it is still the code whose hash meta.json records.

One process runs a trial at a time: before it reads or writes anything the worker takes the
trial's lock (`harness/trial_lock.py`). When another live process holds it, the worker exits with
`LOCKED_EXIT_STATUS` and has written nothing; a trial that another process ended since it was
planned is not run again. Started by an executor, the worker asks the kernel to kill it if its
parent dies, so a killed sweep leaves no orphan trials. On Linux it is the subreaper of every
process the trial starts (detached ones included: double fork, setsid), and when the trial ends,
normally, by an exception or by SIGTERM, it kills them all before it exits.

A trial on several devices (meta.json's `num_devices`) runs on them from here: in JAX in this
process, over a device mesh; in PyTorch as one process per device under torchrun
(`harness/backends/torch/distributed.py`), started by this process, which keeps the lock, stays the
subreaper of them all, and records the trial's end if rank 0 could not.

In a container (`harness/containers.py`), the executor's process is out of sight: the worker ends
the trial as if killed (exit status 137, resumable) when the heartbeat file its owner touches
(`TIMETRIAL_HEARTBEAT`) is older than `HEARTBEAT_TIMEOUT_SEC`, and finds the code paths of
meta.json, which name the planner's checkout (`TIMETRIAL_HOST_REPO`), in the image's copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import trial_lock
from harness.discovery import REPO_ROOT, find_submission, load_submission, load_workload
from harness.errors import UserInputError
from harness.process_tree import become_subreaper, kill_descendants, prctl
from harness.progress import TrialProgress
from harness.contention import ContentionMonitor
from harness.records import TrialRecord, read_json
from harness.trial import OneDevice, TrialOutcome, run_trial

PARENT_PID_VARIABLE = "TIMETRIAL_PARENT_PID"
LOCKED_EXIT_STATUS = 75  # sysexits' EX_TEMPFAIL: another process holds the trial's lock
HEARTBEAT_VARIABLE = "TIMETRIAL_HEARTBEAT"
HEARTBEAT_TIMEOUT_SEC = 15.0
HOST_REPO_VARIABLE = "TIMETRIAL_HOST_REPO"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the executor that started it dies (even by kill -9)."""
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent is not None:
        die_with(int(parent))


def die_with(parent_pid: int) -> None:
    """Linux: SIGKILL this process when its parent, `parent_pid`, dies; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def end_with_owner() -> None:
    """In a container: end the trial as if killed once its owner stops touching the heartbeat file."""
    path = os.environ.get(HEARTBEAT_VARIABLE)
    if path is None:
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                age = time.time() - os.stat(path).st_mtime
            except FileNotFoundError:
                age = float("inf")
            if age > HEARTBEAT_TIMEOUT_SEC:
                print(f"the trial's owner is gone ({path} untouched for more than {HEARTBEAT_TIMEOUT_SEC:g} s): "
                      "trial ended; run the same command again to resume it", file=sys.stderr, flush=True)
                kill_descendants()
                os._exit(128 + signal.SIGKILL)

    threading.Thread(target=watch, name="heartbeat", daemon=True).start()


def code_path_here(path: str) -> str:
    """A code path of meta.json as this process finds it: in a container, a workload or submission of
    the planner's checkout is the image's copy (the planner checked that their code is the same)."""
    host = os.environ.get(HOST_REPO_VARIABLE)
    if host is None or "/" not in path or not Path(path).is_relative_to(host):
        return path
    relative = Path(path).relative_to(host)
    return str(REPO_ROOT / relative) if relative.parts[:1] in (("workloads",), ("submissions",)) else path


def _on_sigterm(signum, frame) -> None:
    """Kill the trial's processes, then die of SIGTERM as the sender meant."""
    kill_descendants()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def checkpoint_path(trial_dir: Path) -> Path:
    return trial_dir / "checkpoint" / "latest.pt"


def _recorded_outcome(trial_dir: Path) -> TrialOutcome:
    """The outcome summary.json records."""
    names = {f.name for f in dataclasses.fields(TrialOutcome)}
    summary = read_json(trial_dir / "summary.json")
    return TrialOutcome(**{"status": "running", **{k: v for k, v in summary.items() if k in names}})


def _ended_elsewhere(trial_dir: Path) -> TrialOutcome | None:
    """The recorded outcome when another process ended the trial after it was planned; else None."""
    outcome = _recorded_outcome(trial_dir)
    if outcome.status == "running":
        return None
    print(f"{trial_dir}: not run again: another process ended it ({outcome.status}) since it was planned",
          file=sys.stderr)
    return outcome


def run_trial_dir(trial_dir: Path) -> TrialOutcome:
    """Run (or resume) the trial described by `trial_dir/meta.json`; its summary is written either way.

    Raises `trial_lock.Locked`, having written nothing, when another process runs the trial."""
    with trial_lock.held(trial_dir):
        return _ended_elsewhere(trial_dir) or _run_locked(trial_dir)


def _load(meta: dict) -> tuple:
    """The trial's workload and submission; the submission's code is imported here, in the worker, and
    only if it is still the code the run was planned with."""
    workload = load_workload(code_path_here(meta["workload_ref"]), meta["framework"], meta["data_dir"])
    submission_path = code_path_here(meta["submission_path"])
    found = find_submission(submission_path, meta["framework"])
    if found.code_hash() != meta["code"]["submission"]:
        raise UserInputError(f"submission {found.path} changed after the run was planned (its content hash "
                             "differs from meta.json's); run the command again")
    if workload.data_hash() != meta["data_hash"]:
        raise UserInputError(f"the data of {meta['workload']} in {meta['data_dir']} are not the data the run was "
                             "planned with (content hash differs from meta.json's); run the command again")
    return workload, load_submission(submission_path, meta["framework"])


def _run_locked(trial_dir: Path) -> TrialOutcome:
    meta = json.loads((trial_dir / "meta.json").read_text())
    if meta.get("num_devices", 1) > 1 and meta["framework"] == "pytorch":
        return _run_ranks(trial_dir, meta["num_devices"])
    return run_trial_here(trial_dir)


def _run_ranks(trial_dir: Path, num_devices: int) -> TrialOutcome:
    """Run a PyTorch trial as one process per device; rank 0 records it. The reasons other failed ranks
    left are added to a failure (which rank failed first, the others then losing their peers, is not
    known); when the processes ended before rank 0 recorded the end, the failure is recorded here."""
    from harness.backends.torch import distributed

    with tempfile.TemporaryDirectory(prefix="timetrial-ranks-") as errors_dir:
        try:
            status = distributed.launch(trial_dir, num_devices, Path(errors_dir))
        except UserInputError as exc:
            outcome = TrialOutcome("running")
            outcome.fail(exc)
            TrialRecord(trial_dir).write_summary(outcome.summary())
            return outcome
        reasons = [json.loads(path.read_text()) | {"rank": path.stem.replace("_", " ")}
                   for path in sorted(Path(errors_dir).glob("rank_*.json"))]
    outcome = _recorded_outcome(trial_dir)
    reasons = [r for r in reasons if r["error"] != outcome.error]  # all ranks may fail alike (an import error)
    if outcome.status not in ("running", "failed") or (outcome.status == "failed" and not reasons):
        return outcome
    said = [f"rank 0: {outcome.stop_reason}"] if outcome.status == "failed" else []
    if not said and not reasons:
        said = [f"the trial's processes ended (exit status {status}) before rank 0 recorded its end; their output "
                "is in the trial's log"]
    outcome.status = "failed"
    outcome.stop_reason = "; ".join([*said, *(f"{r['rank']}: {r['stop_reason']}" for r in reasons)])
    outcome.error = "\n".join([outcome.error or "", *(f"{r['rank']}: {r['error']}" for r in reasons)]).strip()
    TrialRecord(trial_dir).write_summary(outcome.summary())
    return outcome


class _Silent:
    """The progress display of a process that does not report (ranks other than 0)."""

    def on_step(self, global_step, clock) -> None: ...

    def on_eval(self, global_step, eval_row, clock) -> None: ...

    def close(self) -> None: ...


def run_trial_here(trial_dir: Path, is_main: bool = True, contention: ContentionMonitor | None = None) -> TrialOutcome:
    """Run (or resume) the trial in this process, on meta.json's `num_devices` (a JAX mesh, or this rank's
    part of a PyTorch trial). Only the main process (rank 0) writes the records and shows progress."""
    meta = json.loads((trial_dir / "meta.json").read_text())
    record = TrialRecord(trial_dir, writes=is_main)
    try:
        workload, submission = _load(meta)
        num_devices = meta.get("num_devices", 1)
        devices = workload.use_devices(num_devices) if num_devices > 1 else OneDevice()
    except Exception as exc:  # noqa: BLE001 - an import error of the submission fails its trial, not the sweep
        outcome = TrialOutcome("running")
        outcome.fail(exc)
        print(f"error: {outcome.stop_reason}", file=sys.stderr)
        record.write_summary(outcome.summary())
        return outcome
    label = f"{meta['workload']}/{meta['submission']} study_{meta['study']}/trial_{meta['trial']}"
    progress = (TrialProgress(label, workload.target_metric_name, workload.validation_target_value, meta["budget_sec"])
                if is_main else _Silent())
    try:
        outcome = run_trial(
            workload, submission, meta["hparams"], meta["rng_seed"], meta["budget_sec"], record, progress,
            meta["max_global_steps"], checkpoint=checkpoint_path(trial_dir),
            eval_every_steps=meta.get("eval_every_steps"), eval_period_sec=meta.get("eval_period_sec"),
            contention=contention, devices=devices,
        )
        if outcome.unused_hyperparameters and is_main:
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
    end_with_owner()
    become_subreaper()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return 1 if run_trial_dir(Path(argv[1])).status == "failed" else 0
    except trial_lock.Locked as exc:
        if PARENT_PID_VARIABLE not in os.environ:  # an executor says it itself, outside the trial's log
            print(exc, file=sys.stderr)
        return LOCKED_EXIT_STATUS
    finally:
        kill_descendants()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

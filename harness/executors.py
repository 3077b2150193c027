"""Executors: run planned trials, each in its own worker process, under wall-clock and memory limits.

* `run_local` — the embedded executor: up to `max_workers` worker processes at once, supervised
  from this process's main thread.
  With `start` (`harness/containers.py`), each worker runs in a Docker container of its own instead.
* `run_ray` — the same supervision inside Ray tasks, on a local Ray instance or an existing
  cluster (`address`); the trial directories must be on a filesystem the cluster shares.

A worker's output goes to its trial's `log.txt`, capped (`harness/capped_log.py`: head and tail
kept). A worker that crashes, exceeds its wall-clock limit, or grows past its memory limit (resident
memory of the worker and its children, polled) is killed and its trial recorded as failed with
the reason; the run goes on. A worker killed from outside by SIGKILL leaves its trial
*interrupted*: rerunning the command resumes it from its last checkpoint. A worker that finds its
trial locked by another process (another sweep runs it) changes nothing; its outcome is *locked*
and the executor says on stderr who holds the lock.

When a trial ends, however it ends, every process it started is gone: the worker kills its
descendants itself, and the supervisor, which remembers the worker's descendants as it polls,
kills those still alive and the worker's process group (for a worker killed at a limit, from
outside, or one that crashed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from harness.capped_log import CappedLog
from harness.discovery import REPO_ROOT
from harness.experiment import write_failure
from harness.records import read_json
from harness.process_tree import KILL_WAIT_SEC, kill_processes
from harness.trial_lock import Locked, recorded_holder
from harness.worker import LOCKED_EXIT_STATUS, PARENT_PID_VARIABLE

POLL_SEC = 0.1
REMEMBER_SEC = 1.0  # how often the worker's descendants are listed (a scan of /proc) between kills
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Limits:
    wall_sec: float | None = None
    memory_gb: float | None = None


class TrialProcess:
    """One supervised worker process for one trial directory."""

    RESUMABLE_SIGNALS: tuple[int, ...] = (signal.SIGKILL,)  # a worker killed by one from outside: interrupted

    def __init__(self, trial_dir: Path, limits: Limits, stream_output: bool) -> None:
        self.trial_dir, self.limits = trial_dir, limits
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(  # same working directory, so relative paths mean the same
            [sys.executable, "-m", "harness.worker", str(trial_dir)],
            env={**os.environ, PARENT_PID_VARIABLE: str(os.getpid()), "PYTHONPATH": python_path},
            stdout=None if stream_output else subprocess.PIPE, stderr=None if stream_output else subprocess.STDOUT,
            start_new_session=True,
        )
        self._log = None if stream_output else CappedLog(trial_dir / "log.txt", self.process.stdout)
        self.started = self._remembered_at = time.monotonic()
        self._root = psutil.Process(self.process.pid)
        self._descendants: set[psutil.Process] = set()  # every one seen; psutil checks PID reuse

    def _remember(self) -> list[psutil.Process]:
        """The worker's descendants now, added to those remembered."""
        try:
            found = self._root.children(recursive=True)
        except psutil.Error:
            return []
        self._descendants.update(found)
        self._remembered_at = time.monotonic()
        return found

    def _resident_gb(self) -> float:
        total = 0
        for process in [self._root, *self._remember()]:
            try:
                total += process.memory_info().rss
            except psutil.Error:  # ended meanwhile, or a zombie
                pass
        return total / 2**30

    def _kill_leftovers(self) -> None:
        """SIGKILL the remembered descendants still alive (and theirs), and the worker's process group."""
        leftovers = kill_processes(self._descendants)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        psutil.wait_procs([p for p in leftovers if p != self._root], timeout=KILL_WAIT_SEC)

    def kill(self) -> None:
        """SIGKILL the worker and every process the trial started."""
        if self.process.poll() is None:
            self._remember()
            kill_processes([self._root])
        self._kill_leftovers()
        self.process.wait()

    def _fail(self, reason: str) -> str:
        self.kill()
        write_failure(self.trial_dir, reason, reason)
        return self._finish("failed")

    def _finish(self, outcome: str) -> str:
        if self._log is not None:
            self._log.close()
            self.process.stdout.close()
        return outcome

    def _log_tail(self) -> str:
        return self._log.tail(LOG_TAIL_CHARS) if self._log is not None else "(output above)"

    def poll(self) -> str | None:
        """None while the trial runs; then 'done', 'failed', 'interrupted' or 'locked'."""
        code = self.process.poll()
        if code is None:
            wall, memory = self.limits.wall_sec, self.limits.memory_gb
            if wall is not None and time.monotonic() - self.started > wall:
                return self._fail(f"exceeded the per-trial wall-clock limit of {wall:g} s")
            if memory is not None and (resident := self._resident_gb()) > memory:
                return self._fail(f"exceeded the per-trial memory limit of {memory:g} GB (resident {resident:.2f} GB)")
            if time.monotonic() - self._remembered_at >= REMEMBER_SEC:
                self._remember()
            return None
        self._kill_leftovers()
        if code == LOCKED_EXIT_STATUS:
            return self._finish("locked")
        status = read_json(self.trial_dir / "summary.json").get("status")
        if code in (0, 1) and status != "running":
            return self._finish("failed" if status == "failed" else "done")
        if code < 0 and -code in self.RESUMABLE_SIGNALS:
            return self._finish("interrupted")
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        write_failure(self.trial_dir, f"the worker process died ({how})", self._log_tail())
        return self._finish("failed")


def say_locked(trial_dir: Path, outcome: str) -> None:
    """On stderr: who holds the lock of a trial whose outcome is 'locked'."""
    if outcome == "locked":
        print(f"not run: {Locked(trial_dir, recorded_holder(trial_dir) or 'unknown')}", file=sys.stderr, flush=True)


def supervise(trial_dir: Path, limits: Limits) -> str:
    """Run one trial's worker to its end; used by Ray tasks."""
    process = TrialProcess(trial_dir, limits, stream_output=False)
    while (outcome := process.poll()) is None:
        time.sleep(POLL_SEC)
    return outcome


def run_local(trial_dirs: list[Path], limits: Limits, max_workers: int,
              on_start: Callable[[Path], None], on_end: Callable[[Path, str], None],
              start: Callable[[Path, bool], TrialProcess] | None = None) -> None:
    """Run the trials with at most `max_workers` at a time. A single trial streams its output here.

    `start(trial_dir, stream_output)` starts one trial's worker (default: a `TrialProcess` here)."""
    start = start or (lambda trial_dir, stream_output: TrialProcess(trial_dir, limits, stream_output))
    pending, running = list(trial_dirs), []
    try:
        while pending or running:
            while pending and len(running) < max_workers:
                trial_dir = pending.pop(0)
                on_start(trial_dir)
                running.append(start(trial_dir, len(trial_dirs) == 1))
            time.sleep(POLL_SEC)
            for process in list(running):
                if (outcome := process.poll()) is not None:
                    running.remove(process)
                    say_locked(process.trial_dir, outcome)
                    on_end(process.trial_dir, outcome)
    finally:
        for process in running:
            process.kill()


def run_ray(trial_dirs: list[Path], limits: Limits, address: str | None, max_workers: int,
            on_start: Callable[[Path], None], on_end: Callable[[Path, str], None]) -> None:
    """Run the trials as Ray tasks (one CPU each) on `address`, or on a local Ray instance."""
    import ray

    runtime_env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
    original, trial_dirs = trial_dirs, [d.resolve() for d in trial_dirs]  # Ray workers run elsewhere
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=max_workers, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(supervise)
        futures = {}
        for trial_dir, resolved in zip(original, trial_dirs):
            on_start(trial_dir)
            futures[task.remote(resolved, limits)] = trial_dir
        while futures:
            done, _ = ray.wait(list(futures), num_returns=1)
            trial_dir, outcome = futures.pop(done[0]), ray.get(done[0])
            say_locked(trial_dir, outcome)
            on_end(trial_dir, outcome)
    finally:
        ray.shutdown()

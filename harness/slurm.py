"""The Slurm executor: each trial one Slurm job, submitted with submitit, that supervises the trial's worker.

    python submit.py --workload wmt --executor slurm --experiment_dir /shared/runs \\
        --slurm_partition gpu --slurm_parameters account=my_lab,qos=high

A job runs on its node what a Ray task runs (`harness/executors.py`): the trial's worker process
under the per-trial wall-clock and memory limits, its output in the trial's `log.txt`. submitit's
own files (the pickled call, the job's stdout and stderr) go to `<experiment>/slurm/<job id>/`, so
the run records must be on a filesystem the nodes share. Each job asks for

* time: ceil((wall + JOB_MARGIN_SEC) / 60) minutes, `wall` being the per-trial wall-clock limit
  (`--trial_timeout_sec`, default 3 x budget + 300 s: the timed budget plus evaluations,
  initialisation and checkpoints), so the trial's own limit, a recorded failure, fires before Slurm's;
* GPUs per node: `SlurmRequest.gpus` (none when 0); memory: the per-trial memory limit plus
  SUPERVISOR_MEMORY_GB, when there is one; a partition, CPUs and any other sbatch option when given;
* `--requeue`, and submitit's `--signal=USR2@90` (the checkpoint signal, 90 s before the time limit).

Preemption and time limits: Slurm signals every process of the job. On SIGUSR2, submitit calls the
job's `checkpoint()` and requeues the job with the call it returns, this trial's again; the
supervisor stops the worker on its way out, leaving the trial interrupted as after `kill -9`, and
the requeued job's worker resumes it from its last checkpoint (`preemption_count` one higher). A
worker that dies of SIGTERM or SIGUSR2 leaves its trial interrupted too, and its supervisor waits
(ENDING_GRACE_SEC) for Slurm to requeue or end the job. A job that ends without an outcome is
`interrupted` when it was cancelled, and otherwise its trial is recorded as failed with the reason
and the job's error.

Tests run the jobs with submitit's LocalExecutor on this machine: the environment variable
TIMETRIAL_SLURM_CLUSTER=local (test-only) replaces the cluster.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.discovery import REPO_ROOT
from harness.errors import UserInputError
from harness.executors import LOG_TAIL_CHARS, Limits, TrialProcess, say_locked
from harness.experiment import write_failure
from harness.records import read_json

CLUSTER_VARIABLE = "TIMETRIAL_SLURM_CLUSTER"  # test-only: "local" runs the jobs here (submitit's LocalExecutor)
JOB_MARGIN_SEC = 600.0  # the job's start, its Python imports, and submitit's USR2 lead (90 s) before the limit
SUPERVISOR_MEMORY_GB = 1.0  # the job's own Python process, beside the trial's memory limit
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)  # what Slurm sends a job it preempts, times out or cancels
ENDING_GRACE_SEC = 300.0  # a supervisor whose worker Slurm signalled waits this long to be requeued or ended
POLL_SEC = 1.0
SET_BY_TIMETRIAL = {  # sbatch options each job's request sets: --slurm_parameters may not
    "time": "--trial_timeout_sec", "gpus_per_node": "--slurm_gpus_per_trial", "partition": "--slurm_partition",
    "cpus_per_task": "--slurm_cpus_per_trial", "mem": "--trial_memory_gb",
    **dict.fromkeys(("job_name", "signal", "requeue", "no_requeue", "output", "error", "open_mode", "array"),
                    "TimeTrial itself"),
}
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class SlurmRequest:
    """What each trial's job asks Slurm for, besides its time limit (`time_limit_min`)."""

    gpus: int = 1
    partition: str | None = None
    cpus: int | None = None
    parameters: dict[str, str | bool] = field(default_factory=dict)  # more sbatch options: name -> value


def parse_parameters(items: list[str]) -> dict[str, str | bool]:
    """sbatch options from `name=value` items (a bare `name` is a switch, e.g. `exclusive`)."""
    parameters: dict[str, str | bool] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name = name.strip().removeprefix("--")
        if not _OPTION_NAME.fullmatch(name) or (equals and not value):
            raise UserInputError(f"--slurm_parameters: {item!r} is not name=value (an sbatch option, e.g. "
                                 "account=my_lab) or a bare switch name (e.g. exclusive)")
        owner = SET_BY_TIMETRIAL.get(name.replace("-", "_"))
        if owner is not None:
            raise UserInputError(f"--slurm_parameters: {name} is set by {owner}, not --slurm_parameters")
        parameters[name] = value if equals else True
    return parameters


def time_limit_min(limits: Limits) -> int:
    """A trial's job's time limit in whole minutes: ceil((wall-clock limit + JOB_MARGIN_SEC) / 60)."""
    if limits.wall_sec is None:
        raise ValueError("a Slurm job's time limit comes from the per-trial wall-clock limit, and there is none")
    return math.ceil((limits.wall_sec + JOB_MARGIN_SEC) / 60)


def cluster() -> str:
    """The submitit cluster the jobs go to: `slurm`, or `local` when TIMETRIAL_SLURM_CLUSTER says so (tests)."""
    return os.environ.get(CLUSTER_VARIABLE, "slurm")


def check_cluster(name: str) -> None:
    """Raise `UserInputError` when submitit cannot submit to `name` from this machine."""
    try:
        import submitit
    except ImportError:
        raise UserInputError("--executor slurm needs submitit: pip install submitit") from None
    if name not in ("slurm", "local"):
        raise UserInputError(f"{CLUSTER_VARIABLE}={name}: the Slurm executor runs on 'slurm' or, in tests, 'local'")
    if name == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise UserInputError("--executor slurm submits with sbatch, and there is no srun on this machine's PATH: "
                             "run submit.py on a Slurm login node")


def make_executor(folder: Path, request: SlurmRequest, limits: Limits, cluster_name: str):
    """A submitit executor whose jobs ask for `request` and `limits`' time; its files go to `folder`/<job id>."""
    import submitit

    check_cluster(cluster_name)
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster_name)
    # A Slurm job unpickles a `TrialJob`, so it imports harness from this checkout wherever it starts (a local
    # job inherits this process's environment and directory; a setup there would put a shell between it and cancel).
    setup = [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    executor.update_parameters(
        timeout_min=time_limit_min(limits),
        gpus_per_node=request.gpus or None,
        cpus_per_task=request.cpus,
        mem_gb=None if limits.memory_gb is None else limits.memory_gb + SUPERVISOR_MEMORY_GB,
        slurm_partition=request.partition,
        slurm_additional_parameters={"requeue": True, **request.parameters},
        slurm_setup=setup,
    )
    return executor


class _JobTrialProcess(TrialProcess):
    """A worker in a Slurm job: Slurm's ending signals leave its trial interrupted, to be resumed."""

    RESUMABLE_SIGNALS = (signal.SIGKILL, *ENDING_SIGNALS)

    def stop(self) -> None:
        """Kill the worker and every process of the trial (left interrupted), and finish its log."""
        self.kill()
        self._finish("interrupted")


class TrialJob:
    """The call a trial's job runs: supervise the trial's worker; submitit's `checkpoint()` requeues it."""

    def __init__(self, trial_dir: Path, limits: Limits) -> None:
        self.trial_dir, self.limits = trial_dir, limits

    def __call__(self) -> str:
        """The trial's outcome: 'done', 'failed', 'interrupted' or 'locked'."""
        process, outcome = _JobTrialProcess(self.trial_dir, self.limits, stream_output=False), None
        try:
            while (outcome := process.poll()) is None:
                time.sleep(POLL_SEC)
        finally:
            if outcome is None:  # left by an exception: submitit's requeue (SystemExit), a cancel (KeyboardInterrupt)
                process.stop()
        if -(process.process.returncode or 0) in ENDING_SIGNALS:
            time.sleep(ENDING_GRACE_SEC)  # Slurm is ending the job: submitit requeues it, or Slurm kills it, meanwhile
        return outcome

    def checkpoint(self):
        """submitit's hook on SIGUSR2 (preemption, time limit): the call that the requeued job runs."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrialJob(self.trial_dir, self.limits))


def job_name(trial_dir: Path) -> str:
    """`timetrial:<workload>_<framework>/<submission>/study_<k>/trial_<i>`."""
    return "timetrial:" + "/".join(trial_dir.parts[-4:])


def job_outcome(job, trial_dir: Path) -> str:
    """The outcome of a finished job; a job that ended without one is `interrupted` when cancelled, and
    otherwise its trial is recorded as failed (unless the trial recorded its own end)."""
    state = job.state
    if not job.paths.result_pickle.exists() and state.upper().startswith(("CANCELLED", "INTERRUPTED")):
        return "interrupted"
    try:
        return job.result()
    except Exception as exc:  # noqa: BLE001 - whatever ended the job outside the trial
        error = str(exc)
    status = read_json(trial_dir / "summary.json").get("status")
    if status not in (None, "running"):
        return "failed" if status == "failed" else "done"
    write_failure(trial_dir, f"the Slurm job {job.job_id} ended outside the trial (state {state})",
                  error[-LOG_TAIL_CHARS:])
    return "failed"


def run_slurm(trial_dirs: list[Path], limits: Limits, request: SlurmRequest, folder: Path,
              on_start: Callable[[Path], None], on_end: Callable[[Path, str], None],
              cluster_name: str | None = None) -> None:
    """Run each trial as a job of `cluster_name` (default `cluster()`), submitit's files under `folder`;
    wait for all of them. An interruption (Ctrl-C) cancels the jobs still queued or running."""
    from submitit.core.utils import FailedJobError

    if not trial_dirs:
        return
    executor = make_executor(folder.resolve(), request, limits, cluster_name or cluster())
    jobs = {}
    try:
        for trial_dir in trial_dirs:
            on_start(trial_dir)
            executor.update_parameters(name=job_name(trial_dir))
            try:
                job = executor.submit(TrialJob(trial_dir.resolve(), limits))  # jobs run elsewhere
            except FailedJobError as exc:
                raise UserInputError(f"sbatch refused the job of {trial_dir}: {str(exc).strip()}") from None
            jobs[job] = trial_dir
        while jobs:
            time.sleep(POLL_SEC)
            for job in [job for job in jobs if job.done()]:
                trial_dir = jobs.pop(job)
                outcome = job_outcome(job, trial_dir)
                say_locked(trial_dir, outcome)
                on_end(trial_dir, outcome)
    finally:
        for job in jobs:
            job.cancel(check=False)

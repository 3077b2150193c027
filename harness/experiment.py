"""Plan the trials of a run: every (workload, submission, study, trial), and what to do with each.

Trial directories follow DESIGN.md:
`<experiment_dir>/<experiment_name>/<workload>_<framework>/<submission>/study_<k>/trial_<i>/`.
Existing records are never destroyed silently. A trial already there with the same identity
(hyperparameters, seed, submission and workload as given and their code's content hashes, step
limits, evaluation schedule, device count) is skipped when finished, resumed from its checkpoint
when interrupted, and rerun from scratch when failed only if `rerun_failed` is set. Records of any
other trial stop the whole run before anything is written, naming what differs, unless `overwrite`
is set; every removal is said. The command line decides what runs: a record never does. A trial
that another live process runs (it holds the trial's lock, `harness/trial_lock.py`) is left
alone, even under `overwrite`: its action is `locked`.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from harness import environment, search_space, spec, trial_lock
from harness.code_identity import workload_code_hash
from harness.discovery import REPO_ROOT, SubmissionFile
from harness.errors import UserInputError
from harness.records import TrialRecord, read_json, write_json
from harness.trial import TrialOutcome

FINISHED = ("reached", "budget", "diverged", "stopped")
SELF_TUNING_BUDGET_FACTOR = 1.5  # DESIGN.md (Vocabulary: ruleset)


@dataclass(frozen=True)
class PlannedTrial:
    experiment: "Experiment"
    study: int
    index: int  # 1-based, as AlgoPerf numbers trials
    point: dict | None
    seed: int
    dir: Path
    action: str = "run"  # run | resume | skip | rerun (failed, removed first) | replace (--overwrite) | locked
    locked_by: str | None = None  # who holds the trial's lock when the action is `locked`

    @property
    def label(self) -> str:
        e = self.experiment
        return f"{e.workload.name}/{e.submission.name} study_{self.study}/trial_{self.index}"


@dataclass
class Experiment:
    """One submission on one workload: `num_studies` studies of `num_trials` trials each."""

    workload: spec.Workload
    workload_ref: str  # the --workload value that loads it again (name or path)
    framework: str
    submission: SubmissionFile  # not imported: its code runs only in the trials' workers
    ruleset: str
    space: list | dict | None  # None under the self-tuning ruleset
    num_trials: int
    num_studies: int
    root: Path  # <experiment_dir>/<experiment_name>
    rng_seed: int
    max_global_steps: int | None = None
    eval_every_steps: int | None = None  # None: evaluate every eval_period_sec of wall time
    flags: dict = field(default_factory=dict)
    budget_scale: float = 1.0  # this machine's budget scale (harness/machine_profile.py)
    budget_scale_source: str = "none"  # profile | flag (--budget_scale) | none (the budget does not scale)
    machine_profile: dict | None = None  # machine_profile.trial_record(), when the scale comes from a profile
    container: dict | None = None  # with --docker: the image's `hardware` and `software`, and the `docker` record
    num_devices: int = 1  # devices each trial runs on (--num_devices); the batch size is global

    @property
    def budget_sec(self) -> float:
        """The workload's budget × 1.5 under self-tuning × this machine's budget scale."""
        factor = SELF_TUNING_BUDGET_FACTOR if self.ruleset == "self" else 1.0
        return self.workload.max_allowed_runtime_sec * factor * self.budget_scale

    @property
    def eval_period_sec(self) -> float:
        """The workload's evaluation period × this machine's budget scale (the same evaluations per budget)."""
        return self.workload.eval_period_time_sec * self.budget_scale

    @cached_property
    def code(self) -> dict[str, str]:
        """Content hashes of the submission's and the workload's code (`harness/code_identity.py`)."""
        return {"submission": self.submission.code_hash(), "workload": workload_code_hash(self.workload)}

    def seed(self, *path: int) -> int:
        return int(np.random.SeedSequence([self.rng_seed, *path]).generate_state(1)[0])

    def points(self, study: int) -> list[dict | None]:
        """The study's hyperparameter points: Halton draws seeded by the study, distinct per study."""
        if self.space is None:
            return [None]
        return search_space.draw(self.space, self.num_trials, seed=self.seed(study))

    def trials(self) -> list[PlannedTrial]:
        workload_dir = f"{self.workload.name}_{self.framework}"
        return [
            PlannedTrial(self, study, index, point, self.seed(study, index),
                         self.root / workload_dir / self.submission.name / f"study_{study}" / f"trial_{index}")
            for study in range(self.num_studies)
            for index, point in enumerate(self.points(study), start=1)
        ]


IDENTITY = {  # meta.json key -> what a record that differs there was made with
    "hparams": "other hyperparameters",
    "rng_seed": "another seed",
    "submission_path": "another submission file",
    "workload_ref": "another workload",
    "ruleset": "another tuning ruleset",
    "max_global_steps": "another --max_global_steps",
    "eval_every_steps": "another --eval_every_steps",
    "code": "other code (content hash of the submission or workload files)",
    "data_hash": "other data (content hash)",
    "budget_sec": "another time budget",
    "eval_period_sec": "another evaluation period",
    "docker_image_id": "another Docker image, or none",
    "num_devices": "another --num_devices",
}
RECORDED_BEFORE = {"num_devices": 1}  # what records made before a key existed mean by its absence


def identity(trial: PlannedTrial) -> dict:
    """What a trial's records must agree with to be skipped or resumed (the IDENTITY keys of meta)."""
    experiment = trial.experiment
    return {
        "hparams": trial.point,
        "rng_seed": trial.seed,
        "submission_path": str(experiment.submission.path),
        "workload_ref": _workload_ref(experiment),
        "ruleset": experiment.ruleset,
        "max_global_steps": experiment.max_global_steps,
        "eval_every_steps": experiment.eval_every_steps,
        "code": experiment.code,
        "data_hash": experiment.workload.data_hash(),
        "budget_sec": experiment.budget_sec,
        "eval_period_sec": experiment.eval_period_sec,
        "docker_image_id": experiment.container["docker"]["image_id"] if experiment.container else None,
        "num_devices": experiment.num_devices,
    }


def _workload_ref(experiment: Experiment) -> str:
    ref = experiment.workload_ref
    return str(Path(ref).resolve()) if "/" in ref else ref


def _decide(trial: PlannedTrial, overwrite: bool, rerun_failed: bool) -> tuple[PlannedTrial, str | None]:
    """The trial with its action, and why it blocks the run (None if it does not)."""
    if not trial.dir.exists():
        return trial, None
    if (holder := trial_lock.holder(trial.dir)) is not None:  # before --overwrite: a running trial is never removed
        return replace(trial, action="locked", locked_by=holder), None
    meta, status = read_json(trial.dir / "meta.json"), read_json(trial.dir / "summary.json").get("status")
    if overwrite:
        return replace(trial, action="replace"), None
    planned = identity(trial)
    differs = [why for key, why in IDENTITY.items() if meta.get(key, RECORDED_BEFORE.get(key)) != planned[key]]
    if differs:
        return trial, f"{trial.dir} (records made with {', '.join(differs)})"
    if status in FINISHED:
        return replace(trial, action="skip"), None
    if status == "failed":
        return replace(trial, action="rerun" if rerun_failed else "skip"), None
    return replace(trial, action="resume"), None


def plan(experiments: list[Experiment], overwrite: bool = False, rerun_failed: bool = False) -> list[PlannedTrial]:
    """Decide each trial's action before anything is written; raise if other records are in the way."""
    decided = [_decide(t, overwrite, rerun_failed) for e in experiments for t in e.trials()]
    blocked = [why for _, why in decided if why]
    if blocked:
        raise UserInputError(
            "existing run records would be replaced: " + "; ".join(blocked)
            + ". Choose another --experiment_name, or pass --overwrite to delete them"
        )
    return [trial for trial, _ in decided]


def meta(trial: PlannedTrial) -> dict:
    """Everything a worker needs to run the trial, and everything scoring needs to read it."""
    experiment, workload = trial.experiment, trial.experiment.workload
    container = experiment.container or {}
    return {
        **identity(trial),
        "workload": workload.name,
        "framework": experiment.framework,
        "submission": experiment.submission.name,
        "study": trial.study,
        "trial": trial.index,
        "data_dir": str(workload.data_dir.resolve()),
        "hardware": _hardware(container.get("hardware") or environment.hardware(workload.hardware()), experiment),
        "software": container.get("software") or environment.software(),
        "docker": container.get("docker"),
        "git_commit": environment.git_commit(REPO_ROOT),
        "flags": experiment.flags,
        "budget_scale": experiment.budget_scale,
        "budget_scale_source": experiment.budget_scale_source,
        "machine_profile": experiment.machine_profile,
        **workload.facts(),
    }


def _hardware(machine: dict, experiment: Experiment) -> dict:
    """The machine's hardware record with the number of devices the trial runs on (not those the machine has)."""
    if machine.get("num_devices") == experiment.num_devices:
        return machine
    return environment.fingerprinted({**machine, "num_devices": experiment.num_devices})


def prepare(trial: PlannedTrial) -> None:
    """Create the trial directory (removing what --overwrite or --rerun_failed replaces)."""
    if trial.action in ("replace", "rerun") and trial.dir.exists():
        shutil.rmtree(trial.dir)
        why = "--overwrite" if trial.action == "replace" else "--rerun_failed"
        print(f"removed existing records in {trial.dir} ({why})", file=sys.stderr)
    if trial.action in ("run", "replace", "rerun"):
        record = TrialRecord(trial.dir)
        record.write_meta(meta(trial))
        record.write_hparams(trial.point)
        record.write_summary(TrialOutcome("running").summary())


def describe(trial: PlannedTrial) -> str:
    """One line: where the target was reached, or why not; targets and budget as the trial recorded them."""
    experiment, workload = trial.experiment, trial.experiment.workload
    summary, meta = read_json(trial.dir / "summary.json"), read_json(trial.dir / "meta.json")
    target = meta.get("validation_target_value", workload.validation_target_value)
    budget = meta.get("budget_sec", experiment.budget_sec)
    metric = f"validation {workload.target_metric_name}"
    best = summary.get("best_validation")
    best_text = f"best {metric} {best:.4f}" if best is not None else "no evaluation"
    status = summary.get("status")
    holder = trial.locked_by if trial.action == "locked" else None
    if holder is None and status == "running":  # another sweep took it after this one planned it
        holder = trial_lock.holder(trial.dir)
    if holder:
        return f"{trial.label}: locked: another process runs it, not this command ({holder})"
    if summary.get("time_to_target") is not None:
        line = (f"target reached ({metric} {target:g}) at "
                f"{summary['time_to_target']:.1f} timed seconds / step {summary['steps_to_target']}")
    else:
        line = {
            "budget": f"target not reached within the {budget:g} s budget ({best_text})",
            "diverged": f"diverged: {summary.get('stop_reason')}",
            "stopped": f"target not reached before {summary.get('stop_reason')} at step "
                       f"{summary.get('global_step')} ({best_text})",
            "failed": f"failed: {summary.get('stop_reason')}",
            "running": "interrupted; run the same command again to resume it from its checkpoint",
        }.get(status, f"status {status}")
    note = {"skip": " (recorded earlier; skipped)"}.get(trial.action, "")
    if summary.get("contended"):
        contention = summary["contention"]
        note += (f" [contended: other processes used {contention['other_cores_mean']:.1f} cores on average, busy "
                 f"during {contention['busy_step_share']:.0%} of its timed steps]")
    return f"{trial.label}: {line}{note}"


def write_failure(trial_dir: Path, reason: str, details: str) -> None:
    """Record a trial that died without recording its own end (limit exceeded, crash)."""
    summary = read_json(trial_dir / "summary.json") or TrialOutcome("running").summary()
    summary.update(status="failed", stop_reason=reason, error=details)
    write_json(trial_dir / "summary.json", summary)

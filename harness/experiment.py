"""Run the trials of one submission on one workload and keep their run records.

Trial directories follow DESIGN.md:
`<experiment_dir>/<experiment_name>/<workload>_<framework>/<submission>/study_<k>/trial_<i>/`.
Existing records are never destroyed silently: a finished trial with the same hyperparameters
and seed is skipped and reported; anything else already there stops the run before it writes a
byte, unless `overwrite` is set, in which case the old directory is removed and the removal said.
"""

from __future__ import annotations

import json
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import environment, spec
from harness.discovery import REPO_ROOT, Submission
from harness.errors import UserInputError
from harness.progress import TrialProgress
from harness.records import TrialRecord
from harness.trial import TrialOutcome, run_trial

FINISHED = ("reached", "budget", "diverged", "stopped", "failed")
SELF_TUNING_BUDGET_FACTOR = 1.5  # DESIGN.md (Vocabulary: ruleset)


@dataclass(frozen=True)
class PlannedTrial:
    study: int
    index: int  # 1-based, as AlgoPerf numbers trials
    point: dict | None
    seed: int
    dir: Path
    skip: bool = False


@dataclass
class Experiment:
    workload: spec.Workload
    framework: str
    submission: Submission
    ruleset: str
    points: list[dict | None]
    root: Path  # <experiment_dir>/<experiment_name>
    rng_seed: int
    max_global_steps: int | None = None
    flags: dict = field(default_factory=dict)
    study: int = 0

    @property
    def budget_sec(self) -> float:
        factor = SELF_TUNING_BUDGET_FACTOR if self.ruleset == "self" else 1.0
        return self.workload.max_allowed_runtime_sec * factor

    def trial_seed(self, index: int) -> int:
        return int(np.random.SeedSequence([self.rng_seed, self.study, index]).generate_state(1)[0])

    def trial_dir(self, index: int) -> Path:
        workload_dir = f"{self.workload.name}_{self.framework}"
        return self.root / workload_dir / self.submission.name / f"study_{self.study}" / f"trial_{index}"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def plan(experiment: Experiment, overwrite: bool) -> list[PlannedTrial]:
    """Decide each trial's fate before anything is written; raise if existing records are in the way."""
    planned, blocked = [], []
    for index, point in enumerate(experiment.points, start=1):
        trial = PlannedTrial(experiment.study, index, point, experiment.trial_seed(index), experiment.trial_dir(index))
        if trial.dir.exists():
            summary = _read_json(trial.dir / "summary.json") or {}
            meta = _read_json(trial.dir / "meta.json") or {}
            same = meta.get("hparams") == point and meta.get("rng_seed") == trial.seed
            if summary.get("status") in FINISHED and same and not overwrite:
                trial = PlannedTrial(**{**trial.__dict__, "skip": True})
            elif not overwrite:
                why = "different hyperparameters or seed" if not same else f"status {summary.get('status', 'unknown')}"
                blocked.append(f"{trial.dir} ({why})")
        planned.append(trial)
    if blocked:
        raise UserInputError(
            "existing run records would be replaced: " + "; ".join(blocked)
            + ". Choose another --experiment_name, or pass --overwrite to delete them"
        )
    return planned


def _meta(experiment: Experiment, trial: PlannedTrial) -> dict:
    workload = experiment.workload
    return {
        "workload": workload.name,
        "framework": experiment.framework,
        "submission": experiment.submission.name,
        "submission_path": str(experiment.submission.path),
        "study": trial.study,
        "trial": trial.index,
        "ruleset": experiment.ruleset,
        "rng_seed": trial.seed,
        "hparams": trial.point,
        "budget_sec": experiment.budget_sec,
        "data_hash": workload.data_hash(),
        "hardware": environment.hardware(workload.hardware()),
        "software": environment.software(),
        "git_commit": environment.git_commit(REPO_ROOT),
        "flags": experiment.flags,
        **workload.facts(),
    }


def run_planned(experiment: Experiment, trial: PlannedTrial) -> TrialOutcome:
    """Run one trial; a submission's exception is recorded as a failed trial, not raised."""
    if trial.dir.exists():
        shutil.rmtree(trial.dir)
        print(f"removed existing records in {trial.dir} (--overwrite)", file=sys.stderr)
    record = TrialRecord(trial.dir)
    record.write_meta(_meta(experiment, trial))
    record.write_hparams(trial.point)
    record.write_summary(TrialOutcome("running").summary())
    workload = experiment.workload
    label = f"{workload.name}/{experiment.submission.name} trial_{trial.index}"
    progress = TrialProgress(label, workload.target_metric_name, workload.validation_target_value, experiment.budget_sec)
    try:
        outcome = run_trial(
            workload, experiment.submission, trial.point, trial.seed, experiment.budget_sec,
            record, progress, experiment.max_global_steps,
        )
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any submission bug becomes a failed trial
        outcome = TrialOutcome("failed", error="".join(traceback.format_exception(exc)))
        outcome.stop_reason = f"{type(exc).__name__}: {exc}"
    finally:
        progress.close()
    record.write_summary(outcome.summary())
    return outcome


def describe(experiment: Experiment, trial: PlannedTrial, summary: dict) -> str:
    """One line: where the target was reached, or why not."""
    workload = experiment.workload
    head = f"{workload.name}/{experiment.submission.name} study_{trial.study}/trial_{trial.index}"
    metric = f"validation {workload.target_metric_name}"
    best = summary.get("best_validation")
    best_text = f"best {metric} {best:.4f}" if best is not None else "no evaluation"
    status = summary.get("status")
    if summary.get("time_to_target") is not None:
        return (f"{head}: target reached ({metric} {workload.validation_target_value:g}) at "
                f"{summary['time_to_target']:.1f} timed seconds / step {summary['steps_to_target']}")
    reasons = {
        "budget": f"target not reached within the {experiment.budget_sec:g} s budget ({best_text})",
        "diverged": f"diverged: {summary.get('stop_reason')}",
        "stopped": f"target not reached before {summary.get('stop_reason')} at step {summary.get('global_step')} ({best_text})",
        "failed": f"failed: {summary.get('stop_reason')}",
    }
    return f"{head}: {reasons.get(status, f'status {status}')}"

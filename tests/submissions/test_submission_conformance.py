"""The conformance table, per framework: every submission x every mini workload of the framework runs
a few steps through `submit.py` without error, with finite metrics and a complete run record; and
every submission trains the toy workload under the self-tuning ruleset.

The table is one `submit.py` invocation per framework and workload over all the framework's
submissions (`--executor inline`: one process, so the framework is imported once). Each workload runs as itself, through a wrapper folder that only
cuts evaluation to EVAL_EXAMPLES examples per split, so the table fits in a few minutes on two CPU
cores. New submissions and new mini workloads join the table by being discovered.

Every JAX submission compiles its own step for every workload, so the whole JAX table on the real
workloads is marked `slow` (`pytest -m slow`); by default every JAX workload runs one submission of
FAST_JAX, taken in turn (one per kind of step the JAX backend builds: the short form, weight
averaging with `prepare_for_eval`, Hessian-vector products; each kind on two or three workloads),
and every JAX submission trains the toy workload.

The table checks that submissions run and record, not how fast: its trials get a budget scale of
BUDGET_SCALE, so a slow or busy machine cannot end a 3-step trial on its budget.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from support import TOY_WORKLOAD, NullProgress, run_submit
from harness.discovery import available_submissions, available_workloads, load_submission, load_workload
from harness.records import TrialRecord
from harness.trial import run_trial

FRAMEWORKS = {"pytorch": "torch", "jax": "jax"}  # framework -> its file
FAST_JAX = ("nadamw", "schedule_free_adamw", "sophia_h")
FAST_JAX_OF = {workload: FAST_JAX[i % len(FAST_JAX)]  # each JAX mini workload's fast submission, in turn
               for i, workload in enumerate(sorted(available_workloads("jax", suite="mini")))}


def part(framework: str, submission: str, workload: str) -> str:
    """'fast' for the cells that run by default, 'slow' for the others."""
    return "slow" if framework == "jax" and submission != FAST_JAX_OF[workload] else "fast"


def marked(values: tuple, slow: bool):
    return pytest.param(*values, marks=pytest.mark.slow) if slow else values


PARTS = {(framework, workload, part(framework, submission, workload)) for framework in FRAMEWORKS
         for workload in available_workloads(framework, suite="mini")
         for submission in available_submissions(framework)}
TABLE = [marked(values, values[2] == "slow") for values in sorted(PARTS)]
CELLS = [marked((framework, submission, workload), part(framework, submission, workload) == "slow")
         for framework in FRAMEWORKS for workload in available_workloads(framework, suite="mini")
         for submission in available_submissions(framework)]
TOY_CASES = [(framework, submission) for framework in FRAMEWORKS for submission in available_submissions(framework)]
STEPS = 3
EVAL_EXAMPLES = 64
BUDGET_SCALE = 100

WRAPPER = '''from workloads.{name}.{file} import Workload as Full


class Workload(Full):
    """{name}, evaluated on its first {n} examples of each split."""

    num_eval_train_examples = num_validation_examples = num_test_examples = {n}
'''


class Table:
    """Runs the table one workload at a time (one `submit.py` call each, all submissions), on first use."""

    def __init__(self, root: Path) -> None:
        self.root, self.results = root, {}

    def run(self, framework: str, workload: str, which: str) -> tuple[Path, subprocess.CompletedProcess]:
        """The records of `workload`'s row in the `which` ('fast' or 'slow') part of the table."""
        name = f"{workload}_{framework}"
        if (name, which) not in self.results:
            folder = self.root / "workloads" / framework / workload
            if not folder.exists():
                folder.mkdir(parents=True)
                file = FRAMEWORKS[framework]
                (folder / f"{file}.py").write_text(WRAPPER.format(name=workload, file=file, n=EVAL_EXAMPLES))
            submissions = [s for s in available_submissions(framework) if part(framework, s, workload) == which]
            self.results[name, which] = run_submit(
                "--framework", framework, "--workload", str(folder),
                "--submission", ",".join(submissions), "--max_global_steps", str(STEPS),
                "--eval_every_steps", str(STEPS),  # evaluations after steps 1 and 3 however slow the machine
                "--budget_scale", str(BUDGET_SCALE),
                "--experiment_dir", str(self.root / "runs"), "--experiment_name", f"{name}_{which}",
                "--executor", "inline",
            )
        return self.root / "runs" / f"{name}_{which}" / name, self.results[name, which]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Table:
    return Table(tmp_path_factory.mktemp("conformance"))


@pytest.mark.parametrize(("framework", "workload", "which"), TABLE)
def test_the_table_runs_and_exits_0(table, framework, workload, which):
    _, result = table.run(framework, workload, which)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize(("framework", "submission", "workload"), CELLS)
def test_submission_runs_on_workload_with_a_complete_record(table, framework, submission, workload):
    records, _ = table.run(framework, workload, part(framework, submission, workload))
    trial = records / submission / "study_0" / "trial_1"
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "stopped", summary.get("error")
    assert summary["global_step"] == STEPS and summary["unused_hyperparameters"] == []
    meta = json.loads((trial / "meta.json").read_text())
    hparams = json.loads((trial / "hparams.json").read_text())
    assert meta["ruleset"] == "external" and hparams == meta["hparams"]
    rows = [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows] == [1, STEPS]
    for row in rows:
        metrics = {k: v for k, v in row.items() if k.startswith(("train/", "validation/", "test/"))}
        assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics


@pytest.mark.parametrize(("framework", "submission"), TOY_CASES)
def test_submission_trains_the_toy_workload_under_the_self_tuning_ruleset(framework, submission, tmp_path):
    toy_workload = load_workload(str(TOY_WORKLOAD), framework, tmp_path / "data")
    take, taken = toy_workload.take_train_loss, []
    toy_workload.take_train_loss = lambda: taken.append(take()) or taken[-1]
    record = TrialRecord(tmp_path / "trial")
    outcome = run_trial(
        toy_workload, load_submission(submission, framework), None, 0, 60.0, record, NullProgress(), max_global_steps=30
    )
    assert outcome.status in ("reached", "stopped"), outcome.error
    assert all(math.isfinite(row["validation/loss"]) for row in record.eval_rows)
    # Every step hands the loop its training loss; every 10th is kept in train.jsonl.
    assert len(taken) == outcome.global_step and all(loss is not None for loss in taken)
    rows = record.step_logs["train.jsonl"]
    assert [row["global_step"] for row in rows] == list(range(10, outcome.global_step + 1, 10))
    assert all(math.isfinite(row["loss"]) for row in rows)

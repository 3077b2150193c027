"""`submit.py` driven as a user drives it: run records, skips, and one clear error per bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support import TOY_WORKLOAD, run_submit
from harness.discovery import available_workloads

SHORT_FORM = '''
import torch

def make_optimizer(model, hyperparameters, workload):
    lr = hyperparameters.learning_rate if hyperparameters else 0.1
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
'''


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def toy_args(tmp_path):
    submission = tmp_path / "my_sgd.py"
    submission.write_text(SHORT_FORM)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"min": 0.05, "max": 0.5, "scaling": "log"}}))
    return [
        "--workload", str(TOY_WORKLOAD), "--submission", str(submission), "--tuning_search_space", str(space),
        "--experiment_dir", str(tmp_path / "runs"), "--experiment_name", "e", "--data_dir", str(tmp_path / "data"),
    ]


def test_a_submission_outside_the_repo_runs_trials_and_writes_complete_records(toy_args, tmp_path):
    result = run_submit(*toy_args, "--num_tuning_trials", "2", "--max_global_steps", "40")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len([line for line in lines if "study_0/trial_" in line]) == 2
    for index in (1, 2):
        trial = tmp_path / "runs" / "e" / "toy_pytorch" / "my_sgd" / "study_0" / f"trial_{index}"
        meta = json.loads((trial / "meta.json").read_text())
        assert meta["ruleset"] == "external" and meta["hardware"]["fingerprint"]
        assert set(meta["software"]) >= {"python", "torch"} and meta["data_hash"]
        hparams = json.loads((trial / "hparams.json").read_text())
        assert 0.05 <= hparams["learning_rate"] <= 0.5 and hparams == meta["hparams"]
        rows = [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]
        assert rows[0]["global_step"] == 1
        assert {"accumulated_submission_time", "accumulated_eval_time", "accumulated_logging_time",
                "total_duration", "preemption_count", "validation/error_rate", "test/error_rate",
                "train/error_rate"} <= set(rows[0])
        summary = json.loads((trial / "summary.json").read_text())
        assert summary["status"] in ("reached", "stopped")
        train_file = trial / "train.jsonl"
        train = [json.loads(line) for line in train_file.read_text().splitlines()] if train_file.exists() else []
        assert [r["global_step"] for r in train] == list(range(10, summary["global_step"] + 1, 10))


def test_rerunning_skips_finished_trials_and_changing_them_is_refused(toy_args, tmp_path):
    assert run_submit(*toy_args, "--max_global_steps", "5").returncode == 0
    before = snapshot(tmp_path / "runs")
    again = run_submit(*toy_args, "--max_global_steps", "5")
    assert again.returncode == 0 and "skipped" in again.stdout
    assert snapshot(tmp_path / "runs") == before
    other_space = tmp_path / "space2.json"
    other_space.write_text(json.dumps([{"learning_rate": 0.01}]))
    changed = run_submit(*toy_args, "--tuning_search_space", str(other_space), "--max_global_steps", "5")
    assert changed.returncode == 2 and "--overwrite" in changed.stderr
    assert snapshot(tmp_path / "runs") == before
    overwritten = run_submit(*toy_args, "--tuning_search_space", str(other_space), "--max_global_steps", "5",
                             "--overwrite")
    assert overwritten.returncode == 0 and "removed existing records" in overwritten.stderr


def test_a_skipped_trial_is_described_with_the_target_it_recorded(toy_args, tmp_path):
    assert run_submit(*toy_args, "--max_global_steps", "5").returncode == 0
    trial = next((tmp_path / "runs").rglob("summary.json")).parent
    meta, summary = (json.loads((trial / name).read_text()) for name in ("meta.json", "summary.json"))
    meta["validation_target_value"] = 0.123  # as if the workload's target changed since the run
    summary.update(status="reached", time_to_target=1.5, steps_to_target=4)
    (trial / "meta.json").write_text(json.dumps(meta))
    (trial / "summary.json").write_text(json.dumps(summary))
    again = run_submit(*toy_args, "--max_global_steps", "5")
    assert "target reached (validation error_rate 0.123) at 1.5 timed seconds / step 4 (recorded earlier; skipped)" in again.stdout


@pytest.mark.parametrize(
    "replace, content, message",
    [
        ({"--workload": "no_such_workload"}, None, "unknown workload 'no_such_workload'"),
        ({"--submission": "no_such_submission"}, None, "unknown submission 'no_such_submission'"),
        ({"--submission": "missing/algo.py"}, None, "does not exist"),
        ({}, "{not json", "is not valid JSON"),
        ({}, '{"learning_rate": {"min": 1, "max": 2, "scaling": "cubic"}}', "scaling must be 'linear' or 'log'"),
        ({}, '{"learning_rate": {"min": 0, "max": 2, "scaling": "log"}}', "log scaling but min 0"),
        ({}, "[]", "the list of points is empty"),
        ({"--num_tuning_trials": "0"}, None, "num_tuning_trials"),
        ({"--tuning_ruleset": "sometimes"}, None, "tuning_ruleset"),
        ({"--num_tuning_trials": "3"}, '[{"learning_rate": 0.1}]', "3 trials asked for but the search space lists 1"),
        ({"--submission": "/etc/hostname"}, None, "submission file /etc/hostname is not a Python file (.py)"),
        ({"--submission": "/etc/passwd"}, None, "submission file /etc/passwd is not a Python file (.py)"),
        ({"--rng_seed": "-5"}, None, "--rng_seed=-5: -5 is not a non-negative integer"),
        ({"--trial_memory_gb": "nan"}, None, "--trial_memory_gb must be a finite number"),
        ({"--trial_timeout_sec": "nan"}, None, "--trial_timeout_sec must be a finite number"),
    ],
)
def test_bad_input_gives_one_error_line_exit_2_and_writes_nothing(toy_args, tmp_path, replace, content, message):
    (tmp_path / "runs" / "e").mkdir(parents=True)
    (tmp_path / "runs" / "e" / "keep.txt").write_text("earlier work")
    if content is not None:
        (tmp_path / "space.json").write_text(content)
    args = list(toy_args)
    for flag, value in replace.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    result = run_submit(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert snapshot(tmp_path / "runs") == {"e/keep.txt": b"earlier work"}


def test_an_experiment_dir_that_cannot_hold_records_is_one_error_line(toy_args, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    args = list(toy_args)
    args[args.index("--experiment_dir") + 1] = str(blocker)
    result = run_submit(*args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot write run records under {blocker / 'e'}: Not a directory")
    assert blocker.read_text() == "not a directory"


def test_missing_data_names_the_package_to_install(tmp_path):
    env = {**os.environ, "PATH": str(Path(os.sys.executable).parent)}  # no mod2imp on PATH
    result = run_submit("--workload", "kjv_lm", "--data_dir", str(tmp_path / "empty"),
                        "--experiment_dir", str(tmp_path / "runs"), env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sword-text-kjv" in lines[0] and "libsword-utils" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_failing_submission_is_recorded_as_failed_with_its_error(toy_args, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(SHORT_FORM.replace("return torch.optim.SGD", "raise RuntimeError('boom')\n    return None"))
    args = list(toy_args)
    args[args.index("--submission") + 1] = str(broken)
    result = run_submit(*args, "--max_global_steps", "3")
    assert result.returncode == 1 and "failed: RuntimeError: boom" in result.stdout
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert summary["status"] == "failed" and "RuntimeError: boom" in summary["error"]


# Slow: the conformance table (tests/submissions) drives every mini workload through submit.py by default,
# evaluating 64 examples a split; this runs the default executor with every split's full evaluation.
@pytest.mark.slow
@pytest.mark.parametrize("workload", available_workloads("pytorch", suite="mini"))
def test_each_mini_workload_runs_end_to_end_on_real_data(workload, tmp_path):
    result = run_submit("--workload", workload, "--submission", "nadamw", "--max_global_steps", "3",
                        "--experiment_dir", str(tmp_path), "--experiment_name", "e2e")
    assert result.returncode == 0, result.stderr
    trial = tmp_path / "e2e" / f"{workload}_pytorch" / "nadamw" / "study_0" / "trial_1"
    assert {p.name for p in trial.iterdir()} >= {"meta.json", "hparams.json", "eval.jsonl", "summary.json"}
    rows = [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [1, 3]
    meta = json.loads((trial / "meta.json").read_text())
    metric = meta["target_metric_name"]
    assert all(0 <= r[f"validation/{metric}"] < float("inf") for r in rows)  # BLEU is 0 before training
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["global_step"] == 3
    assert "step 3" in result.stdout

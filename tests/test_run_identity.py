"""A result is never reported for code or settings other than those that produced it, the command
line (not a record) decides what runs, submission code runs only in its trial's worker, and an
unloadable checkpoint restarts its trial instead of crashing it (issue 12 items 1, 2, 6, 7, 13)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from support import TOY_WORKLOAD, NullProgress, run_submit
from harness.discovery import load_submission
from harness.records import TrialRecord, read_json, read_jsonl_prefix
from harness.trial import run_trial

SGD = """
import torch

def make_optimizer(model, hyperparameters, workload):
    return torch.optim.SGD(model.parameters(), lr=hyperparameters.learning_rate)
"""


def setup(tmp_path: Path, folder: str = "a", code: str = SGD) -> Path:
    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    path = tmp_path / folder / "algo.py"
    path.write_text(code)
    (tmp_path / "space.json").write_text(json.dumps([{"learning_rate": 0.1}]))
    return path


def args(tmp_path: Path, submission: Path | str, *extra: str) -> list[str]:
    return ["--workload", str(TOY_WORKLOAD), "--submission", str(submission), "--tuning_search_space",
            str(tmp_path / "space.json"), "--max_global_steps", "5", "--experiment_dir", str(tmp_path / "runs"),
            "--data_dir", str(tmp_path / "data"), *extra]


def trial_dir(tmp_path: Path, name: str = "algo") -> Path:
    return tmp_path / "runs" / "default" / "toy_pytorch" / name / "study_0" / "trial_1"


def refused(result, *reasons: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "existing run records would be replaced" in result.stderr
    for reason in reasons:
        assert reason in result.stderr, result.stderr


def test_edited_submission_code_is_refused_and_overwrite_reruns_it(tmp_path):
    path = setup(tmp_path)
    assert run_submit(*args(tmp_path, path)).returncode == 0
    before = read_json(trial_dir(tmp_path) / "summary.json")
    path.write_text(SGD.replace("lr=hyperparameters.learning_rate", "lr=hyperparameters.learning_rate * 10"))
    refused(run_submit(*args(tmp_path, path)), "other code")
    assert read_json(trial_dir(tmp_path) / "summary.json") == before
    rerun = run_submit(*args(tmp_path, path, "--overwrite"))
    assert rerun.returncode == 0 and "(recorded earlier; skipped)" not in rerun.stdout


def test_another_file_with_the_same_name_is_refused(tmp_path):
    assert run_submit(*args(tmp_path, setup(tmp_path, "a"))).returncode == 0
    other = setup(tmp_path, "b", SGD.replace("torch.optim.SGD(", "torch.optim.Adam("))
    refused(run_submit(*args(tmp_path, other)), "another submission file", "other code")


def test_a_changed_step_limit_is_refused(tmp_path):
    path = setup(tmp_path)
    assert run_submit(*args(tmp_path, path)).returncode == 0
    refused(run_submit(*args(tmp_path, path, "--max_global_steps", "7")), "another --max_global_steps")


def test_a_record_that_names_another_submission_file_does_not_decide_what_runs(tmp_path):
    path = setup(tmp_path)
    assert run_submit(*args(tmp_path, path)).returncode == 0
    evil = setup(tmp_path, "evil", SGD + "\nopen(__file__ + '.ran', 'w').close()\n")
    meta_path = trial_dir(tmp_path) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["submission_path"] = str(evil)
    (trial_dir(tmp_path) / "summary.json").write_text(json.dumps({"status": "running"}))  # as if interrupted
    meta_path.write_text(json.dumps(meta))
    refused(run_submit(*args(tmp_path, path)), "another submission file")
    assert not Path(f"{evil}.ran").exists()


def test_a_submission_that_hangs_at_import_is_one_failed_trial_and_the_sweep_goes_on(tmp_path):
    hangs = setup(tmp_path, "h", "import time\ntime.sleep(1000)\n" + SGD)
    hangs = hangs.rename(hangs.with_name("hangs.py"))
    fine = setup(tmp_path, "f")
    result = run_submit(*args(tmp_path, f"{hangs},{fine}", "--trial_timeout_sec", "15"))
    assert result.returncode == 1, result.stderr
    assert "hangs study_0/trial_1: failed: exceeded the per-trial wall-clock limit of 15 s" in result.stdout
    assert read_json(trial_dir(tmp_path, "algo") / "summary.json")["status"] == "stopped"


def test_a_search_space_point_without_a_key_the_submission_reads_fails_its_trial_naming_the_key(tmp_path):
    path = setup(tmp_path)
    (tmp_path / "space.json").write_text(json.dumps([{"lr": 0.1}]))
    result = run_submit(*args(tmp_path, path))
    assert result.returncode == 1
    expected = "AttributeError: hyperparameter 'learning_rate' is not in this trial's search-space point (it has lr)"
    assert read_json(trial_dir(tmp_path) / "summary.json")["stop_reason"] == expected
    assert f"algo study_0/trial_1: failed: {expected}" in result.stdout


def test_an_unloadable_checkpoint_is_reported_kept_and_the_trial_restarts(toy_workload, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = setup(tmp_path)
    checkpoint = tmp_path / "trial" / "checkpoint" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model": Payload()}, checkpoint)
    (tmp_path / "trial" / "eval.jsonl").write_text('{"global_step": 40}\n')
    record = TrialRecord(tmp_path / "trial")
    outcome = run_trial(toy_workload, load_submission(str(path), "pytorch"), {"learning_rate": 0.1}, 0, 60.0, record,
                        NullProgress(), max_global_steps=5, checkpoint=checkpoint)
    assert not (tmp_path / "pwned").exists()
    assert outcome.status in ("stopped", "reached") and outcome.global_step == 5
    assert any("could not be loaded (UnpicklingError" in w and "restarts from step 0" in w for w in outcome.warnings)
    assert (tmp_path / "trial" / "checkpoint" / "latest.pt.unloadable").exists()
    assert (tmp_path / "trial" / "eval.jsonl.before_restart").read_text() == '{"global_step": 40}\n'
    rows = read_jsonl_prefix(tmp_path / "trial" / "eval.jsonl")
    assert rows[0]["global_step"] == 1 and {r["preemption_count"] for r in rows} == {0}

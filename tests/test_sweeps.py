"""Sweeps: process isolation, limits, resume after kill -9, studies, determinism, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from support import REPO, TOY_WORKLOAD, NullProgress, run_submit
from harness.discovery import load_submission, load_workload
from harness.records import TrialRecord
from harness.trial import run_trial

SLOW_SGD = '''
import time
import torch

STEP_SLEEP = {sleep}


class SlowSGD(torch.optim.SGD):
    def step(self, closure=None):
        time.sleep(STEP_SLEEP)
        return super().step(closure)


def make_optimizer(model, hyperparameters, workload):
    return SlowSGD(model.parameters(), lr=hyperparameters.learning_rate if hyperparameters else 1e-4)
'''


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rows(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]


def summary(trial: Path) -> dict:
    return json.loads((trial / "summary.json").read_text())


def sweep_args(tmp_path: Path, submissions: list[Path], *extra: str) -> list[str]:
    space = write(tmp_path / "space.json", json.dumps([{"learning_rate": 1e-4}, {"learning_rate": 2e-4}]))
    return ["--workload", str(TOY_WORKLOAD), "--submission", ",".join(map(str, submissions)),
            "--tuning_search_space", str(space), "--experiment_dir", str(tmp_path / "runs"),
            "--experiment_name", "s", "--data_dir", str(tmp_path / "data"), *extra]


def trial_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "runs").rglob("meta.json"))


def test_kill_9_of_the_sweep_then_resume_completes_with_every_row_intact(tmp_path):
    submission = write(tmp_path / "slow.py", SLOW_SGD.format(sleep=0.02))
    args = sweep_args(tmp_path, [submission], "--num_tuning_trials", "2", "--max_global_steps", "120")
    sweep = subprocess.Popen([sys.executable, str(REPO / "submit.py"), *args], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "runs" / "s" / "toy_pytorch" / "slow" / "study_0" / "trial_1"
    deadline = time.monotonic() + 120
    while not (first / "eval.jsonl").exists() or len(rows(first)) < 30:
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.1)
    workers = psutil.Process(sweep.pid).children(recursive=True)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), "orphaned worker"
    before = rows(first)
    assert summary(first)["status"] == "running"

    resumed = run_submit(*args)
    assert resumed.returncode == 0, resumed.stderr
    for trial in trial_dirs(tmp_path):
        after = rows(trial)
        assert summary(trial)["status"] == "stopped" and after[-1]["global_step"] == 120
        steps = [r["global_step"] for r in after]
        assert steps == sorted(set(steps))
        times = [r["accumulated_submission_time"] for r in after]
        assert times == sorted(times)
    after = rows(first)
    assert after[: len(before)] == before  # nothing recorded before the kill was lost or changed
    assert after[-1]["preemption_count"] == 1 and before[-1]["preemption_count"] == 0
    assert after[len(before)]["accumulated_submission_time"] >= before[-1]["accumulated_submission_time"]


def test_kill_9_of_one_trial_marks_it_interrupted_and_a_rerun_resumes_it(tmp_path):
    submission = write(tmp_path / "slow.py", SLOW_SGD.format(sleep=0.02))
    args = sweep_args(tmp_path, [submission], "--max_global_steps", "150")
    sweep = subprocess.Popen([sys.executable, str(REPO / "submit.py"), *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial = tmp_path / "runs" / "s" / "toy_pytorch" / "slow" / "study_0" / "trial_1"
    while not (trial / "eval.jsonl").exists() or len(rows(trial)) < 20:
        assert sweep.poll() is None
        time.sleep(0.1)
    psutil.Process(sweep.pid).children()[0].send_signal(signal.SIGKILL)
    out, _ = sweep.communicate(timeout=60)
    assert sweep.returncode == 1 and "interrupted" in out
    resumed = run_submit(*args)
    assert resumed.returncode == 0 and summary(trial)["status"] == "stopped"
    assert rows(trial)[-1]["preemption_count"] == 1


def test_raising_hanging_and_memory_hungry_submissions_fail_alone(tmp_path):
    raising = write(tmp_path / "raising.py", "def make_optimizer(model, hyperparameters, workload):\n"
                    "    raise ValueError('bad idea')\n")
    hanging = write(tmp_path / "hanging.py", SLOW_SGD.format(sleep=3600))
    hungry = write(tmp_path / "hungry.py", SLOW_SGD.format(sleep=0).replace(
        "time.sleep(STEP_SLEEP)", "HOARD.append(bytearray(200 * 2**20)); time.sleep(0.05)") + "\nHOARD = []\n")
    fine = write(tmp_path / "fine.py", SLOW_SGD.format(sleep=0))
    args = sweep_args(tmp_path, [raising, hanging, hungry, fine], "--max_global_steps", "20",
                      "--trial_timeout_sec", "20", "--trial_memory_gb", "1.5", "--max_workers", "2")
    result = run_submit(*args)
    assert result.returncode == 1
    by_name = {t.parents[1].name: summary(t) for t in trial_dirs(tmp_path)}
    assert by_name["raising"]["status"] == "failed" and "ValueError: bad idea" in by_name["raising"]["error"]
    assert by_name["hanging"]["status"] == "failed"
    assert "wall-clock limit of 20 s" in by_name["hanging"]["stop_reason"]
    assert by_name["hungry"]["status"] == "failed" and "memory limit of 1.5 GB" in by_name["hungry"]["stop_reason"]
    assert by_name["fine"]["status"] == "stopped"
    # Failed trials are skipped on a rerun unless asked for.
    again = run_submit(*args)
    assert "recorded earlier; skipped" in again.stdout and "bad idea" in again.stdout


def test_studies_draw_distinct_points_and_seeds(tmp_path):
    space = write(tmp_path / "space.json", json.dumps({"learning_rate": {"min": 1e-3, "max": 1e-1, "scaling": "log"}}))
    submission = write(tmp_path / "fine.py", SLOW_SGD.format(sleep=0))
    result = run_submit("--workload", str(TOY_WORKLOAD), "--submission", str(submission),
                        "--tuning_search_space", str(space), "--num_tuning_trials", "2", "--num_studies", "2",
                        "--max_global_steps", "3", "--experiment_dir", str(tmp_path / "runs"),
                        "--experiment_name", "s", "--max_workers", "2")
    assert result.returncode == 0, result.stderr
    metas = [json.loads((t / "meta.json").read_text()) for t in trial_dirs(tmp_path)]
    assert sorted((m["study"], m["trial"]) for m in metas) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert len({m["hparams"]["learning_rate"] for m in metas}) == 4
    assert len({m["rng_seed"] for m in metas}) == 4


def test_search_space_keys_the_submission_never_reads_are_warned_about(tmp_path):
    space = write(tmp_path / "space.json", json.dumps([{"learning_rate": 0.01, "momentum": 0.9}]))
    submission = write(tmp_path / "fine.py", SLOW_SGD.format(sleep=0))
    result = run_submit("--workload", str(TOY_WORKLOAD), "--submission", str(submission),
                        "--tuning_search_space", str(space), "--max_global_steps", "3",
                        "--experiment_dir", str(tmp_path / "runs"))
    assert result.returncode == 0
    assert "never read hyperparameters momentum" in result.stderr
    assert summary(trial_dirs(tmp_path)[0])["unused_hyperparameters"] == ["momentum"]


def test_the_same_seed_on_cpu_gives_identical_evaluation_rows(tmp_path):
    workload_rows = []
    for run in range(2):
        workload = load_workload("fashion_mnist", "pytorch", Path.home() / ".cache" / "timetrial" / "data")
        workload.num_eval_train_examples = workload.num_validation_examples = workload.num_test_examples = 512
        workload.eval_period_time_sec = 0.0
        record = TrialRecord(tmp_path / str(run))
        run_trial(workload, load_submission("nadamw", "pytorch"), None, 7, 1e9, record, NullProgress(), 6)
        workload_rows.append([{k: v for k, v in r.items() if "/" in k or k == "global_step"} for r in record.eval_rows])
    assert len(workload_rows[0]) == 6 and workload_rows[0] == workload_rows[1]


def test_eval_every_steps_gives_identical_evaluation_rows_whatever_the_wall_clock(tmp_path):
    metric_rows = []
    for name, sleep in (("quick", 0.0), ("slow", 0.03)):
        submission = write(tmp_path / f"sgd_{name}.py", SLOW_SGD.format(sleep=sleep))
        args = sweep_args(tmp_path, [submission], "--max_global_steps", "12", "--eval_every_steps", "4",
                          "--experiment_name", name)
        result = run_submit(*args)
        assert result.returncode == 0, result.stderr
        (trial,) = [t for t in trial_dirs(tmp_path) if f"/runs/{name}/" in str(t)]
        assert json.loads((trial / "meta.json").read_text())["eval_every_steps"] == 4
        metric_rows.append([{k: v for k, v in r.items() if "/" in k or k == "global_step"} for r in rows(trial)])
    assert [r["global_step"] for r in metric_rows[0]] == [1, 4, 8, 12]
    assert metric_rows[0] == metric_rows[1]


CHATTY = """
import torch

def make_optimizer(model, hyperparameters, workload):
    for i in range(250_000):
        print(f"chatty line {i:06d} " + "x" * 40)
    return torch.optim.SGD(model.parameters(), lr=0.1)
"""


def test_a_chatty_trial_log_keeps_its_head_and_tail_under_the_cap(tmp_path):
    from harness.capped_log import HEAD_BYTES, TAIL_BYTES

    chatty, quiet = write(tmp_path / "chatty.py", CHATTY), write(tmp_path / "quiet.py", SLOW_SGD.format(sleep=0))
    result = run_submit(*sweep_args(tmp_path, [chatty, quiet], "--max_global_steps", "3"))
    assert result.returncode == 0, result.stderr
    log = next(t for t in trial_dirs(tmp_path) if "chatty" in str(t)) / "log.txt"
    text = log.read_bytes()
    assert HEAD_BYTES + TAIL_BYTES <= len(text) < HEAD_BYTES + TAIL_BYTES + 500  # 250k lines are ~15 MB
    assert text.startswith(b"chatty line 000000 ")
    assert text.count(b"[timetrial: ") == 1 and b"bytes of output cut here" in text
    assert b"chatty line 249999 " in text[-TAIL_BYTES:] and b"step 3" in text[-2000:]


def test_a_resumed_trial_continues_exactly_where_it_stopped(toy_workload, tmp_path):
    submission = load_submission(str(write(tmp_path / "fine.py", SLOW_SGD.format(sleep=0))), "pytorch")

    def run(directory: str, max_steps: int) -> list[dict]:
        workload = load_workload(str(TOY_WORKLOAD), "pytorch", tmp_path)
        workload.validation_target_value = workload.test_target_value = -1.0
        record = TrialRecord(tmp_path / directory)
        run_trial(workload, submission, {"learning_rate": 0.05}, 3, 1e9, record, NullProgress(), max_steps,
                  checkpoint=tmp_path / directory / "checkpoint" / "latest.pt")
        return [{k: v for k, v in r.items() if "/" in k or k == "global_step"} for r in record.eval_rows]

    straight = run("straight", 25)
    run("interrupted", 12)
    resumed = run("interrupted", 25)
    assert resumed == straight


def test_ray_executor_runs_a_sweep_on_a_local_ray_cluster(tmp_path):
    pytest.importorskip("ray")
    submission = write(tmp_path / "fine.py", SLOW_SGD.format(sleep=0))
    args = sweep_args(tmp_path, [submission], "--num_tuning_trials", "2", "--max_global_steps", "5",
                      "--executor", "ray", "--max_workers", "2")
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    result = run_submit(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [summary(t)["status"] for t in trial_dirs(tmp_path)] == ["stopped", "stopped"]

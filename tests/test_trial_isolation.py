"""Trial isolation: one process runs a trial at a time (its lock), and no process a trial started outlives it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from support import REPO, run_submit
from test_sweeps import SLOW_SGD, rows, summary, sweep_args, write
from harness import trial_lock
from harness.executors import Limits, run_local
from harness.worker import LOCKED_EXIT_STATUS, run_trial_dir

HOLD = """
import os, sys, time
from harness import trial_lock
with trial_lock.held(sys.argv[1]):
    if len(sys.argv) > 2 and os.fork() == 0:  # a forked child must not keep the lock once we are gone
        time.sleep(60)
        os._exit(0)
    print("held", flush=True)
    time.sleep(600)
"""


def hold_lock(trial_dir: Path, *extra: str) -> subprocess.Popen:
    """Another process that holds `trial_dir`'s lock until killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(trial_dir), *extra], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def fake_trial(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text(json.dumps({"workload": "none"}))
    (directory / "summary.json").write_text(json.dumps({"status": "running"}))
    return directory


def test_the_lock_names_its_live_holder_and_dies_with_it(tmp_path):
    trial = fake_trial(tmp_path / "trial_1")
    assert trial_lock.holder(trial) is None  # no lock file yet, and the probe creates none
    assert not (trial / trial_lock.LOCK_FILE).exists()
    holder = hold_lock(trial, "fork")
    forked = psutil.Process(holder.pid).children()
    try:
        who = trial_lock.holder(trial)
        assert who.startswith(f"pid {holder.pid} on host {socket.gethostname()} since 20") and " -c " in who
        assert trial_lock.holder(trial) == who  # a probe does not disturb the holder
        with pytest.raises(trial_lock.Locked, match=f"pid {holder.pid} "):
            run_trial_dir(trial)  # the inline executor's path
        holder.kill()
        holder.wait()
        assert forked and all(p.is_running() for p in forked)
        assert trial_lock.holder(trial) is None  # released by the kernel; the forked child kept no copy
        with trial_lock.held(trial):
            assert trial_lock.holder(trial).startswith(f"pid {os.getpid()} ")
        assert trial_lock.holder(trial) is None
    finally:
        holder.kill()
        holder.wait()
        for process in forked:
            process.kill()


def test_a_worker_on_a_locked_trial_exits_locked_having_written_nothing(tmp_path):
    trial = fake_trial(tmp_path / "trial_1")
    holder = hold_lock(trial)
    try:
        before = snapshot(trial)
        worker = subprocess.run([sys.executable, "-m", "harness.worker", str(trial)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert worker.returncode == LOCKED_EXIT_STATUS
        assert f"pid {holder.pid} " in worker.stderr and "locked" in worker.stderr
        assert snapshot(trial) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_trial_another_process_ended_since_it_was_planned_is_not_run_again(tmp_path):
    trial = fake_trial(tmp_path / "trial_1")  # its meta.json could not even be run
    ended = {"status": "stopped", "global_step": 120, "stop_reason": "max_global_steps", "not_a_field": 1}
    (trial / "summary.json").write_text(json.dumps(ended))
    before = snapshot(trial)
    outcome = run_trial_dir(trial)
    assert (outcome.status, outcome.global_step) == ("stopped", 120)
    assert {k: v for k, v in snapshot(trial).items() if k != trial_lock.LOCK_FILE} == before


def test_the_local_executor_reports_a_locked_trial_and_leaves_it_alone(tmp_path, capsys):
    trial = fake_trial(tmp_path / "trial_1")
    holder = hold_lock(trial)
    try:
        before, ended = snapshot(trial), {}
        run_local([trial], Limits(120.0), 1, lambda d: None, lambda d, outcome: ended.update({d: outcome}))
        assert ended == {trial: "locked"}
        assert snapshot(trial) == before  # no log.txt, no failure recorded
        said = capsys.readouterr().err
        assert f"{trial} is locked" in said and f"pid {holder.pid} " in said
    finally:
        holder.kill()
        holder.wait()


def test_a_second_sweep_does_not_run_the_trials_a_first_one_is_running(tmp_path):
    submission = write(tmp_path / "slow.py", SLOW_SGD.format(sleep=0.05))
    args = sweep_args(tmp_path, [submission], "--num_tuning_trials", "2", "--max_workers", "2",
                      "--max_global_steps", "400", "--eval_every_steps", "50")
    first = subprocess.Popen([sys.executable, str(REPO / "submit.py"), *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        study = tmp_path / "runs" / "s" / "toy_pytorch" / "slow" / "study_0"
        trials = [study / "trial_1", study / "trial_2"]
        deadline = time.monotonic() + 120
        while not all((t / "eval.jsonl").exists() and trial_lock.holder(t) for t in trials):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        workers = {t: int(trial_lock.holder(t).split()[1]) for t in trials}
        assert set(workers.values()) == {w.pid for w in psutil.Process(first.pid).children()}

        second = run_submit(*args)
        assert first.poll() is None, "the first sweep ended before the second could meet its trials"
        said = second.stdout + second.stderr
        assert second.returncode == 1  # trials this command was asked for did not finish under it
        for trial in trials:
            lines = [line for line in said.splitlines() if "locked" in line and trial.name in line]
            assert any(f"pid {workers[trial]} " in line for line in lines), said

        first.communicate(timeout=300)
        assert first.returncode == 0
        for trial in trials:
            assert summary(trial)["status"] == "stopped"
            steps = [r["global_step"] for r in rows(trial)]
            assert steps == sorted(set(steps)) and steps[-1] == 400
            assert {r["preemption_count"] for r in rows(trial)} == {0}  # nobody resumed from its checkpoint
            assert (trial / "log.txt").read_text().count("Traceback") == 0
    finally:
        first.kill()
        first.wait()


ORPHAN_MARK = "TIMETRIAL_TEST_ORPHAN"
ORPHANS = """
import os, pathlib, subprocess, time
import torch

MARK, STARTED, THEN = {mark!r}, pathlib.Path({started!r}), {then!r}


def start_orphans():
    # A child in its own session, and a double-forked grandchild; both would outlive the trial.
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 env={{**os.environ, {key!r}: MARK}})
    tag = f"{{os.getpid()}}"
    subprocess.Popen(["setsid", "sh", "-c", f"touch {{STARTED}}/{{tag}}.3000; exec sleep 3000"], **quiet)
    subprocess.run(["bash", "-c", f"(sleep 3001 & touch {{STARTED}}/{{tag}}.3001) &"], check=True, **quiet)
    while len(list(STARTED.glob(f"{{tag}}.*"))) < 2:
        time.sleep(0.05)


def make_optimizer(model, hyperparameters, workload):
    start_orphans()
    if THEN == "hang" or (THEN == "raise_second" and hyperparameters.learning_rate > 1.5e-4):
        if THEN == "hang":
            time.sleep(3600)
        raise RuntimeError("the second trial fails after starting its children")
    return torch.optim.SGD(model.parameters(), lr=hyperparameters.learning_rate)
"""


def orphan_submission(tmp_path: Path, then: str) -> tuple[Path, str, Path]:
    """A submission whose trials each start two long-lived detached processes, marked; then `then`."""
    mark, started = uuid.uuid4().hex, tmp_path / "started"
    started.mkdir()
    text = ORPHANS.format(mark=mark, started=str(started), then=then, key=ORPHAN_MARK)
    return write(tmp_path / "spawner.py", text), mark, started


def marked(mark: str) -> list[psutil.Process]:
    """Live processes carrying `mark` in their environment."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(ORPHAN_MARK) == mark and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            pass
    return found


def kill_marked(mark: str) -> None:
    """Leave nothing behind, whatever the test found."""
    for process in marked(mark):
        try:
            process.kill()
        except psutil.Error:
            pass


def test_processes_a_trial_started_are_gone_when_it_ends(tmp_path):
    submission, mark, started = orphan_submission(tmp_path, "raise_second")
    try:
        result = run_submit(*sweep_args(tmp_path, [submission], "--num_tuning_trials", "2", "--max_global_steps", "5"))
        assert result.returncode == 1, result.stderr[-3000:]  # the second trial raised, as it should
        assert len(list(started.iterdir())) == 4, "each trial started its two children"
        assert [p.cmdline() for p in marked(mark)] == []
    finally:
        kill_marked(mark)


def test_processes_of_a_trial_killed_at_its_time_limit_are_gone(tmp_path):
    submission, mark, started = orphan_submission(tmp_path, "hang")
    try:
        result = run_submit(*sweep_args(tmp_path, [submission], "--num_tuning_trials", "2",
                                        "--max_workers", "2", "--trial_timeout_sec", "25"))
        assert result.returncode == 1
        assert "wall-clock limit of 25 s" in result.stdout
        assert len(list(started.iterdir())) == 4, "each trial started its two children before its limit"
        assert [p.cmdline() for p in marked(mark)] == []
    finally:
        kill_marked(mark)


def test_processes_of_a_worker_ended_by_sigterm_are_gone(tmp_path):
    submission, mark, started = orphan_submission(tmp_path, "hang")
    sweep = subprocess.Popen([sys.executable, str(REPO / "submit.py"), *sweep_args(tmp_path, [submission])],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(started.iterdir())) < 2:
            assert time.monotonic() < deadline and sweep.poll() is None
            time.sleep(0.1)
        psutil.Process(sweep.pid).children()[0].send_signal(signal.SIGTERM)
        out, _ = sweep.communicate(timeout=60)
        assert sweep.returncode == 1 and "signal SIGTERM" in out
        assert [p.cmdline() for p in marked(mark)] == []
    finally:
        sweep.kill()
        sweep.wait()
        kill_marked(mark)

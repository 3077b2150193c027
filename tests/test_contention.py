"""Contention: other processes' CPU use during a trial's timed steps, and the `contended` flag."""

from __future__ import annotations

import json
import math
import os
import time

from busy import busy_processes
from harness.contention import CONTENDED_STEP_SHARE, ContentionMonitor, CpuReading, busy_cores
from harness.discovery import load_submission
from harness.records import TrialRecord
from harness.trial import run_trial
from support import NullProgress, run_submit, toy_variant


class FakeCpu:
    """A machine whose busy and own CPU seconds, and wall time, the test advances."""

    def __init__(self) -> None:
        self.t, self.busy, self.own = 0.0, 0.0, 0.0

    def read(self) -> CpuReading:
        return CpuReading(self.busy, self.own)

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.t += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds


def test_busy_windows_count_their_steps_and_the_share_flags_the_trial():
    cpu = FakeCpu()
    monitor = ContentionMonitor(read=cpu.read, now=lambda: cpu.t, cpus=2)
    assert busy_cores(2) == 0.5 and busy_cores(64) == 6.4
    monitor.open()
    for _ in range(12):  # 3 quiet windows of 4 steps (0.25 s each): others at 0.2 cores
        cpu.run(0.25, own_cores=2.0, other_cores=0.2)
        monitor.step()
    for _ in range(4):  # 1 busy window: another process takes a whole core
        cpu.run(0.25, own_cores=1.0, other_cores=1.0)
        monitor.step()
    monitor.close()
    summary = monitor.summary()
    assert summary["observed_steps"] == 16 and summary["busy_steps"] == 4
    assert summary["busy_step_share"] == 0.25 > CONTENDED_STEP_SHARE and monitor.contended
    assert math.isclose(summary["other_cpu_seconds"], 0.6 + 1.0)
    assert math.isclose(summary["other_cores_mean"], 1.6 / 4.0)


def test_a_quiet_machine_is_not_contended_and_untimed_work_is_not_observed():
    cpu = FakeCpu()
    monitor = ContentionMonitor(read=cpu.read, now=lambda: cpu.t, cpus=2)
    monitor.open()
    for _ in range(8):
        cpu.run(0.25, own_cores=2.0, other_cores=0.1)
        monitor.step()
    monitor.close()
    cpu.run(5.0, own_cores=0.0, other_cores=2.0)  # an evaluation while others are busy: not a timed step
    monitor.open()
    cpu.run(0.25, own_cores=2.0, other_cores=0.0)
    monitor.step()
    monitor.close()
    assert not monitor.contended and monitor.busy_steps == 0
    assert math.isclose(monitor.summary()["observed_seconds"], 2.25)


def test_a_resumed_trial_continues_the_counts():
    first = ContentionMonitor(read=lambda: CpuReading(0, 0), cpus=2)
    first.observed_steps, first.busy_steps, first.other_cpu_seconds, first.observed_seconds = 100, 30, 9.0, 10.0
    second = ContentionMonitor(read=lambda: CpuReading(0, 0), cpus=2)
    second.restore(json.loads(json.dumps(first.summary())))
    assert second.summary() == first.summary() and second.contended


def _long_toy(toy_workload):
    toy_workload.validation_target_value = toy_workload.test_target_value = -1.0  # never reached
    toy_workload.eval_period_time_sec = 0.5
    return toy_workload


def test_a_trial_run_beside_busy_processes_is_flagged_contended(toy_workload, tmp_path):
    workload = _long_toy(toy_workload)
    with busy_processes():
        time.sleep(0.5)
        outcome = run_trial(workload, load_submission("adamw", "pytorch"), None, 0, 4.0,
                            TrialRecord(tmp_path), NullProgress())
    assert outcome.status == "budget"
    assert outcome.contended, outcome.contention
    assert outcome.contention["other_cores_mean"] > busy_cores(ContentionMonitor().cpus)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["contended"] and summary["contention"]["busy_step_share"] > CONTENDED_STEP_SHARE


def test_submit_marks_a_contended_trial_and_warns(tmp_path):
    with busy_processes():
        time.sleep(0.5)
        workload = toy_variant(tmp_path, "toy_unreachable", validation_target_value=-1.0, test_target_value=-1.0,
                               max_allowed_runtime_sec=3.0, eval_period_time_sec=0.5)
        # one torch thread: two threads spin-waiting for cores that the busy processes hold make the
        # trial tens of times slower (seen on 2 cores), which is what the flag is for, but slow for a test
        result = run_submit("--workload", str(workload), "--submission", "adamw", "--tuning_ruleset", "self",
                            "--experiment_dir", str(tmp_path / "runs"), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "[contended: other processes used" in result.stdout
    assert "warning: 1 of 1 trials ran their timed steps while other processes used" in result.stderr
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert summary["contended"] is True

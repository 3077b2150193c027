"""Budgets that fit the machine: calibration, machine profiles and the budget scale."""

from __future__ import annotations

import json
import sys
import subprocess
from pathlib import Path

import pytest

from busy import busy_processes
from harness import machine_profile
from harness.discovery import load_workload
from harness.experiment import Experiment
from support import REPO, run_submit, toy_variant

REFERENCE = 0.01  # the toy variants' calibration seconds per step


def calibrated_toy(directory: Path) -> Path:
    return toy_variant(directory, "toy_calibrated", calibration_seconds_per_step=REFERENCE,
                       max_allowed_runtime_sec=20.0, eval_period_time_sec=2.0)


def write_profile(directory: Path, workload_folder: Path, seconds_per_step: float) -> dict:
    workload = load_workload(str(workload_folder), "pytorch", directory)
    hardware, software = machine_profile.machine(workload)
    profile = machine_profile.new_profile(hardware, software)
    profile["workloads"][workload.name] = {"seconds_per_step": seconds_per_step}
    machine_profile.save(machine_profile.profile_path(hardware, software, directory), profile)
    return profile


def env_with_profiles(directory: Path) -> dict:
    import os
    return {**os.environ, machine_profile.PROFILE_DIR_VARIABLE: str(directory)}


def only_meta(runs: Path) -> dict:
    [meta] = list(runs.rglob("meta.json"))
    return json.loads(meta.read_text())


def test_the_scale_is_this_machines_seconds_per_step_over_the_calibration_machines(tmp_path):
    workload = load_workload("fashion_mnist", "pytorch", tmp_path)
    profile = {"id": "x", "workloads": {"fashion_mnist": {"seconds_per_step": 1.6 * workload.calibration_seconds_per_step}}}
    scale = machine_profile.scale(profile, workload)
    assert scale == 1.6
    experiment = Experiment(workload=workload, workload_ref="fashion_mnist", framework="pytorch", submission=None,
                            ruleset="external", space=None, num_trials=1, num_studies=1, root=tmp_path, rng_seed=0,
                            budget_scale=scale)
    assert experiment.budget_sec == pytest.approx(1.6 * workload.max_allowed_runtime_sec)
    assert experiment.eval_period_sec == pytest.approx(1.6 * workload.eval_period_time_sec)
    # the baseline gets the documented number of steps, and of evaluations, on the slower machine
    steps_here = experiment.budget_sec / profile["workloads"]["fashion_mnist"]["seconds_per_step"]
    assert steps_here == pytest.approx(workload.max_allowed_runtime_sec / workload.calibration_seconds_per_step)
    assert experiment.budget_sec / experiment.eval_period_sec == pytest.approx(
        workload.max_allowed_runtime_sec / workload.eval_period_time_sec)
    self_tuning = Experiment(**{**experiment.__dict__, "ruleset": "self"})
    assert self_tuning.budget_sec == pytest.approx(1.5 * 1.6 * workload.max_allowed_runtime_sec)


def test_on_a_machine_1_6_times_slower_the_budget_and_period_scale_and_the_profile_is_recorded(tmp_path):
    folder = calibrated_toy(tmp_path)
    profile = write_profile(tmp_path / "profiles", folder, 1.6 * REFERENCE)
    result = run_submit("--workload", str(folder), "--submission", "adamw", "--tuning_ruleset", "self",
                        "--max_global_steps", "3", "--experiment_dir", str(tmp_path / "runs"),
                        env=env_with_profiles(tmp_path / "profiles"))
    assert result.returncode == 0, result.stderr
    assert "calibrating" not in result.stderr
    meta = only_meta(tmp_path / "runs")
    assert meta["budget_scale"] == 1.6 and meta["budget_scale_source"] == "profile"
    assert meta["budget_sec"] == pytest.approx(1.5 * 20.0 * 1.6)
    assert meta["eval_period_sec"] == pytest.approx(2.0 * 1.6)
    assert meta["machine_profile"]["id"] == profile["id"]
    assert meta["machine_profile"]["seconds_per_step"] == 1.6 * REFERENCE
    assert meta["machine_profile"]["reference_seconds_per_step"] == REFERENCE
    assert "leaderboard: python -m scoring.report" in result.stdout


def test_budget_scale_overrides_the_profile_and_calibrates_nothing(tmp_path):
    folder = calibrated_toy(tmp_path)
    result = run_submit("--workload", str(folder), "--submission", "adamw", "--tuning_ruleset", "self",
                        "--max_global_steps", "3", "--budget_scale", "2.5", "--experiment_dir", str(tmp_path / "runs"),
                        env=env_with_profiles(tmp_path / "profiles"))
    assert result.returncode == 0, result.stderr
    meta = only_meta(tmp_path / "runs")
    assert meta["budget_scale"] == 2.5 and meta["budget_scale_source"] == "flag" and meta["machine_profile"] is None
    assert meta["budget_sec"] == pytest.approx(1.5 * 20.0 * 2.5)
    assert not (tmp_path / "profiles").exists() or not list((tmp_path / "profiles").glob("*.json"))


def test_a_rerun_with_another_scale_is_refused_as_another_budget(tmp_path):
    folder = calibrated_toy(tmp_path)
    common = ("--workload", str(folder), "--submission", "adamw", "--tuning_ruleset", "self", "--max_global_steps", "3",
              "--experiment_dir", str(tmp_path / "runs"))
    assert run_submit(*common, "--budget_scale", "2").returncode == 0
    refused = run_submit(*common, "--budget_scale", "3")
    assert refused.returncode == 2
    assert "another time budget" in refused.stderr and "another evaluation period" in refused.stderr


def test_a_machine_without_a_profile_is_calibrated_once_on_the_first_run(tmp_path):
    folder = calibrated_toy(tmp_path)
    common = ("--workload", str(folder), "--submission", "adamw", "--tuning_ruleset", "self", "--max_global_steps", "3")
    env = env_with_profiles(tmp_path / "profiles")
    first = run_submit(*common, "--experiment_dir", str(tmp_path / "a"), env=env)
    if "calibration needs an otherwise idle machine" in first.stderr:
        pytest.skip("this machine is busy: " + first.stderr.strip().splitlines()[-1])
    assert first.returncode == 0, first.stderr
    assert "calibrating toy_calibrated on this machine" in first.stderr
    [path] = (tmp_path / "profiles").glob("*.json")
    profile = json.loads(path.read_text())
    entry = profile["workloads"]["toy_calibrated"]
    assert entry["seconds_per_step"] > 0 and len(entry["block_seconds_per_step"]) == 15
    second = run_submit(*common, "--experiment_dir", str(tmp_path / "b"), env=env)
    assert second.returncode == 0 and "calibrating" not in second.stderr
    for runs in ("a", "b"):
        meta = only_meta(tmp_path / runs)
        assert meta["machine_profile"]["id"] == profile["id"]
        assert meta["budget_scale"] == machine_profile.scale(profile, load_workload(str(folder), "pytorch", tmp_path))


def calibrate(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.calibrate", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)


def test_calibration_refuses_a_busy_machine_and_names_what_is_busy(tmp_path):
    folder = calibrated_toy(tmp_path)
    with busy_processes() as pids:
        result = calibrate("--workload", str(folder), env=env_with_profiles(tmp_path / "profiles"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: calibration needs an otherwise idle machine")
    assert any(f"pid {pid} " in line for pid in pids), line
    assert not list((tmp_path / "profiles").glob("*.json"))


def test_a_new_calibration_starts_a_new_profile_and_keeps_the_old_one(tmp_path):
    folder = calibrated_toy(tmp_path)
    env = env_with_profiles(tmp_path / "profiles")
    first = calibrate("--workload", str(folder), "--allow_busy", env=env)
    assert first.returncode == 0, first.stderr
    [path] = (tmp_path / "profiles").glob("*.json")
    old = json.loads(path.read_text())
    assert old["workloads"]["toy_calibrated"]["busy_allowed"] is True
    second = calibrate("--workload", str(folder), "--allow_busy", env=env)
    assert second.returncode == 0, second.stderr
    new = json.loads(path.read_text())
    assert new["id"] != old["id"]
    assert json.loads(path.with_name(f"{path.stem}.{old['id']}.json").read_text()) == old


def test_calibration_of_a_workload_without_a_reference_is_refused(tmp_path):
    result = calibrate("--workload", str(toy_variant(tmp_path, "toy_plain")), env=env_with_profiles(tmp_path / "p"))
    assert result.returncode == 2
    assert "toy_plain has no calibration reference" in result.stderr


def test_an_unreadable_profile_is_one_error_line(tmp_path):
    folder = calibrated_toy(tmp_path)
    write_profile(tmp_path / "profiles", folder, REFERENCE)
    [path] = (tmp_path / "profiles").glob("*.json")
    path.write_text("{not json")
    result = run_submit("--workload", str(folder), "--submission", "adamw", "--tuning_ruleset", "self",
                        "--experiment_dir", str(tmp_path / "runs"), env=env_with_profiles(tmp_path / "profiles"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: machine profile {path} is unreadable")
    assert not (tmp_path / "runs").exists()


def test_each_mini_workloads_reference_is_the_committed_calibration_machines_profile(tmp_path):
    """The calibration references in the workloads are the figures of the profile behind them."""
    from harness.discovery import available_workloads
    reference = json.loads((REPO / "docs" / "targets" / "calibration_machine.json").read_text())
    for name in available_workloads("pytorch", suite="mini"):
        workload = load_workload(name, "pytorch", tmp_path)
        assert workload.calibration_seconds_per_step == reference["workloads"][name]["seconds_per_step"], name
        assert machine_profile.scale(reference, workload) == 1.0

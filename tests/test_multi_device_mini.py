"""A mini workload on two devices (`--num_devices 2`: two torchrun processes with gloo, or a JAX mesh of two
host devices) trains and evaluates as on one device with the same global batch."""

from __future__ import annotations

import json
import os

import pytest

from support import run_submit
from harness.records import read_jsonl_prefix

WORKLOAD = "kjv_lm"  # no BatchNorm (whose statistics are per device, as in AlgoPerf); NAdamW's self-tuning point has no dropout


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_a_mini_workload_on_two_devices_trains_as_on_one(tmp_path, framework):
    if framework == "jax":
        pytest.importorskip("flax")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    rows = {}
    for name, num_devices in (("one", 1), ("two", 2)):
        result = run_submit("--framework", framework, "--workload", WORKLOAD, "--submission", "nadamw",
                            "--tuning_ruleset", "self", "--experiment_dir", str(tmp_path), "--experiment_name", name,
                            "--budget_scale", "1", "--max_global_steps", "6", "--eval_every_steps", "3",
                            "--num_devices", str(num_devices), env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        trial = tmp_path / name / f"{WORKLOAD}_{framework}" / "nadamw" / "study_0" / "trial_1"
        rows[name] = read_jsonl_prefix(trial / "eval.jsonl")
        assert json.loads((trial / "meta.json").read_text())["num_devices"] == num_devices
    assert [r["global_step"] for r in rows["two"]] == [r["global_step"] for r in rows["one"]] == [1, 3, 6]
    # Tolerance: float32 sums over the two halves of each batch, then across devices, in another order.
    for one, two in zip(rows["one"], rows["two"]):
        metrics = {k: v for k, v in one.items() if "/" in k}
        assert {k: v for k, v in two.items() if "/" in k} == pytest.approx(metrics, rel=1e-4)
    assert rows["one"][-1]["train/loss"] < rows["one"][0]["train/loss"]  # it trained

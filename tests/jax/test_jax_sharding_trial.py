"""JAX trials on several devices (`--num_devices`): one process, the batch split over a 1-D device mesh, the
state replicated. On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=2 makes two devices; the flag
must be set before JAX starts, so these trials run in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from support import REPO, TOY_WORKLOAD, run_submit
from harness.backends.jax import sharding
from harness.errors import UserInputError
from harness.records import read_jsonl_prefix

TWO_CPU_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}

SGD = """
import optax


def make_optimizer(params, hyperparameters, workload):
    return optax.sgd(0.02, momentum=0.5)  # slow enough not to reach the targets in 20 steps
"""

# The placement of a 2-device trial's arrays after a few steps of the short form, of an evaluation batch
# whose 21 rows do not split in two, and of the state loaded back from a checkpoint.
PLACEMENT = f"""
import json, pathlib, sys
import jax
from harness.discovery import load_submission, load_workload

workload = load_workload({str(TOY_WORKLOAD)!r}, "jax", sys.argv[2])
devices = workload.use_devices(2)
submission = load_submission(sys.argv[1], "jax")
params, model_state = devices.place_model(*workload.init_model_fn(workload.random_state(0)))
optimizer_state = submission.init_optimizer_state(workload, params, model_state, None, workload.random_state(1))
queue = workload._build_input_queue(0, "train", sys.argv[2], 16)
for step in range(3):
    batch = next(queue)
    optimizer_state, params, model_state = submission.update_params(
        workload, params, None, model_state, None, batch, None, optimizer_state, [], step, workload.random_state(step))


def spread(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return sorted({{(len(x.sharding.device_set), x.sharding.is_fully_replicated) for x in leaves}})


odd = workload.to_device(workload.host_batch("validation", list(range(21))))
checkpoint = pathlib.Path(sys.argv[2]) / "checkpoint.msgpack"
workload.save_checkpoint(checkpoint, params, model_state, optimizer_state, {{"eval_results": []}})
loaded = workload.load_checkpoint(checkpoint, params, optimizer_state)[:3]
same = all(bool((a == b).all()) for a, b in zip(jax.tree_util.tree_leaves((params, model_state, optimizer_state)),
                                                jax.tree_util.tree_leaves(loaded)))
print(json.dumps({{"batch": spread(batch), "params": spread(params), "optimizer": spread(optimizer_state),
                  "odd": spread(odd), "loaded": spread(loaded), "same": same}}))
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_two_device_trial_trains_as_one_device(tmp_path):
    sgd = _write(tmp_path / "sgd.py", SGD)
    trials = {}
    for name, num_devices in (("one", 1), ("two", 2)):
        result = run_submit("--framework", "jax", "--workload", str(TOY_WORKLOAD), "--submission", str(sgd),
                            "--tuning_ruleset", "self", "--experiment_dir", str(tmp_path / "runs"),
                            "--experiment_name", name, "--data_dir", str(tmp_path / "data"), "--budget_scale", "1",
                            "--max_global_steps", "20", "--eval_every_steps", "5", "--num_devices", str(num_devices),
                            env=TWO_CPU_DEVICES)
        assert result.returncode == 0, result.stderr[-3000:]
        trials[name] = tmp_path / "runs" / name / "toy_jax" / "sgd" / "study_0" / "trial_1"
    meta = json.loads((trials["two"] / "meta.json").read_text())
    assert (meta["num_devices"], meta["hardware"]["num_devices"], meta["flags"]["num_devices"]) == (2, 2, 2)
    summaries = [json.loads((trials[name] / "summary.json").read_text()) for name in ("one", "two")]
    assert [(s["status"], s["steps_to_target"]) for s in summaries] == [("stopped", None)] * 2
    one, two = (read_jsonl_prefix(trials[name] / "eval.jsonl") for name in ("one", "two"))
    assert [r["global_step"] for r in two] == [r["global_step"] for r in one] == [1, 5, 10, 15, 20]
    # Tolerance: the two devices' float32 partial sums added in another order, 1e-5 relative.
    for row_one, row_two in zip(one, two):
        metrics = {k: v for k, v in row_one.items() if "/" in k}
        assert {k: v for k, v in row_two.items() if "/" in k} == pytest.approx(metrics, rel=1e-5)
    losses = [[r["loss"] for r in read_jsonl_prefix(trials[name] / "train.jsonl")] for name in ("one", "two")]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert one[-1]["train/loss"] < one[0]["train/loss"]  # it trained


def test_batches_are_split_over_the_mesh_and_the_state_is_replicated(tmp_path):
    sgd = _write(tmp_path / "sgd.py", SGD)
    script = _write(tmp_path / "placement.py", PLACEMENT)
    result = subprocess.run([sys.executable, str(script), str(sgd), str(tmp_path / "data")], cwd=REPO,
                            env={**TWO_CPU_DEVICES, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    placement = json.loads(result.stdout.splitlines()[-1])
    assert placement["batch"] == [[2, False]]  # each device holds half of the batch
    assert placement["params"] == placement["optimizer"] == [[2, True]]  # whole on both, after the steps too
    assert placement["odd"] == [[2, True]]  # 21 rows do not split in two: replicated
    assert placement["loaded"] == [[2, True]] and placement["same"]  # a checkpoint loads back replicated


def test_more_devices_than_jax_sees_is_refused_with_what_to_do():
    seen = len(jax.local_devices())
    with pytest.raises(UserInputError, match=rf"--num_devices {seen + 1}: JAX sees {seen} device\(s\) here .*"
                                             rf"xla_force_host_platform_device_count={seen + 1}"):
        sharding.use_devices(seen + 1)

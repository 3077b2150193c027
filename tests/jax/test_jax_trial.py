"""JAX trials in the harness: the step's device work is charged to the submission (the clock blocks on
the step's outputs before every reading), and a trial resumed from its checkpoint ends exactly as one
that was never interrupted."""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import pytest

from harness.discovery import load_submission, load_workload
from harness.records import TrialRecord
from harness.trial import run_trial
from harness.prepare_data import DEFAULT_DATA_DIR
from support import NullProgress

WORK_MATMULS = 3000


@jax.jit
def device_work(x):
    """Known device work: WORK_MATMULS dependent 256x256 matrix products."""
    return jax.lax.fori_loop(0, WORK_MATMULS, lambda i, y: jnp.tanh(y @ x), x)


@pytest.fixture(scope="module")
def workload():
    return load_workload("fashion_mnist", "jax", DEFAULT_DATA_DIR)


def test_the_steps_device_work_lands_in_submission_time_not_in_evaluation(workload, tmp_path):
    x = jnp.full((256, 256), 1e-3)
    device_work(x).block_until_ready()  # compiled before it is timed
    seconds = float("inf")
    for _ in range(3):  # the least time the work takes: every timed step takes at least about this long
        start = time.perf_counter()
        device_work(x).block_until_ready()
        seconds = min(seconds, time.perf_counter() - start)

    def update_params(workload, params, types, model_state, hp, batch, loss_type, optimizer_state, *rest, **kwargs):
        return {"pending": device_work(x)}, params, model_state  # dispatched, not waited for

    submission = dataclasses.replace(load_submission("nadamw", "jax"), update_params=update_params,
                                     init_optimizer_state=lambda *args: {})
    record = TrialRecord(tmp_path / "trial")
    outcome = run_trial(workload, submission, None, 0, float("inf"), record, NullProgress(), max_global_steps=6,
                        eval_every_steps=3)
    assert outcome.status == "stopped", outcome.error
    row = record.eval_rows[-1]
    assert row["global_step"] == 6
    # Six steps of `seconds` each were timed. Without the block on the step's outputs the six dispatches
    # would take milliseconds, and the work would finish during the (untimed) evaluations.
    assert row["accumulated_submission_time"] >= 0.8 * 6 * seconds, (row, seconds)


def _trial(workload_ref, tmp_path, name, steps):
    record = TrialRecord(tmp_path / name)
    outcome = run_trial(load_workload(workload_ref, "jax", DEFAULT_DATA_DIR), load_submission("nadamw", "jax"), None, 0,
                        float("inf"), record, NullProgress(), max_global_steps=steps, eval_every_steps=3,
                        checkpoint=tmp_path / name / "checkpoint" / "state.msgpack")
    assert outcome.error is None, outcome.error
    return outcome, record


def test_a_resumed_trial_ends_exactly_as_an_uninterrupted_one(tmp_path):
    _, whole = _trial("fashion_mnist", tmp_path, "whole", 6)
    _trial("fashion_mnist", tmp_path, "interrupted", 3)
    outcome, resumed = _trial("fashion_mnist", tmp_path, "interrupted", 6)
    assert [row["global_step"] for row in resumed.eval_rows] == [1, 3, 6]
    assert resumed.eval_rows[-1]["preemption_count"] == 1
    metrics = {k: v for k, v in whole.eval_rows[-1].items() if "/" in k}
    assert metrics == {k: v for k, v in resumed.eval_rows[-1].items() if "/" in k}
    assert metrics["train/loss"] < whole.eval_rows[0]["train/loss"]  # it trained


def test_overhead_benchmark_sides_do_the_same_training_in_jax():
    from benchmarks import harness_overhead

    workload = load_workload("fashion_mnist", "jax", DEFAULT_DATA_DIR)
    harness_overhead.shrink_evaluation(workload, 64)
    result = harness_overhead.measure(workload, blocks=2, block_steps=1, clock_name="cpu")
    assert len(result["harness"]) == len(result["bare"]) == 2
    assert result["harness_loss"] == result["bare_loss"]


def test_framework_step_time_benchmark_times_both_frameworks(tmp_path):
    from benchmarks import framework_step_time
    from support import TOY_WORKLOAD

    for framework in ("pytorch", "jax"):
        milliseconds, busy_share = framework_step_time.milliseconds_per_step(str(TOY_WORKLOAD), framework,
                                                                             str(tmp_path), 2, 2)
        assert milliseconds > 0 and 0 <= busy_share <= 1


FULL_API_SUBMISSION = '''"""Adam through AlgoPerf's full API in JAX: the submission compiles its own step."""
import jax
import optax

from algoperf import spec

TRANSFORMATION = optax.adam(0.05)


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    def step(params, model_state, optax_state, batch, key):
        def mean_loss(params):
            logits, new_state = workload.model_fn(params, batch, model_state, spec.ForwardPassMode.TRAIN, key, True)
            loss = workload.loss_fn(batch["targets"], logits)
            return loss["summed"] / loss["n_valid_examples"], new_state

        (loss, new_state), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
        updates, optax_state = TRANSFORMATION.update(grads, optax_state, params)
        return optax.apply_updates(params, updates), new_state, optax_state

    return {"optax": TRANSFORMATION.init(model_params), "step": jax.jit(step)}


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters, batch,
                  loss_type, optimizer_state, eval_results, global_step, rng):
    params, model_state, optax_state = optimizer_state["step"](
        current_param_container, model_state, optimizer_state["optax"], batch, rng)  # rng: a PRNG key
    return {**optimizer_state, "optax": optax_state}, params, model_state


def get_batch_size(workload_name):
    return 16
'''


def test_a_full_api_jax_submission_runs_through_submit_py(tmp_path):
    from support import TOY_WORKLOAD, run_submit

    path = tmp_path / "adam_full_api.py"
    path.write_text(FULL_API_SUBMISSION)
    result = run_submit("--framework", "jax", "--workload", str(TOY_WORKLOAD), "--submission", str(path),
                        "--tuning_ruleset", "self", "--max_global_steps", "20", "--eval_every_steps", "10",
                        "--experiment_dir", str(tmp_path / "runs"), "--experiment_name", "full")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trial = tmp_path / "runs" / "full" / "toy_jax" / "adam_full_api" / "study_0" / "trial_1"
    rows = [json.loads(line) for line in (trial / "eval.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows] == [1, 10, 20]
    assert rows[-1]["validation/loss"] < rows[0]["validation/loss"]  # it trained
    assert json.loads((trial / "meta.json").read_text())["framework"] == "jax"
    summary = json.loads((trial / "summary.json").read_text())
    assert any("optimizer_state['step'] (PjitFunction) is not plain data" in w for w in summary["warnings"])


def test_a_checkpoint_leaves_out_functions_and_a_resume_keeps_the_fresh_ones(tmp_path):
    import numpy as np
    import optax

    from harness.backends.jax import checkpoint

    params = {"w": jnp.arange(3.0)}
    transformation = optax.adam(0.1)
    saved_state = {"optax": transformation.update({"w": jnp.ones(3)}, transformation.init(params), params)[1],
                   "step": jax.jit(lambda x: x), "name": "adam"}
    warnings = checkpoint.save(tmp_path / "state.msgpack", {"w": params["w"] + 1}, {}, saved_state,
                               {"eval_results": [(1, {"a": 1.0})], "global_step": 1})
    assert warnings == ["checkpoint: optimizer_state['step'] (PjitFunction) is not plain data and was not "
                        "saved; a resumed trial keeps the value that init_optimizer_state builds"]
    fresh_step = jax.jit(lambda x: 2 * x)
    fresh = {"optax": transformation.init(params), "step": fresh_step, "name": "adam"}
    restored_params, _, restored, loop = checkpoint.load(tmp_path / "state.msgpack", params, fresh)
    assert restored["step"] is fresh_step and restored["name"] == "adam"
    np.testing.assert_array_equal(restored["optax"][0].mu["w"], saved_state["optax"][0].mu["w"])
    assert int(restored["optax"][0].count) == 1 and type(restored["optax"]) is type(fresh["optax"])
    np.testing.assert_array_equal(restored_params["w"], params["w"] + 1)
    assert loop["eval_results"] == [(1, {"a": 1.0})]

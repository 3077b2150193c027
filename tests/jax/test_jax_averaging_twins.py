"""The JAX submissions that evaluate at other weights than they train (schedule_free_adamw, dog, ema,
lawa) against their torch twins, and the averaging properties in JAX.

Twins: 25 steps of the toy workload through AlgoPerf's full API in both frameworks, from the same
initial weights on the same batches, with evaluations (`prepare_for_eval`) interleaved as the trial loop
interleaves them; the training weights after every step and the evaluated weights at every evaluation
agree within float32 tolerance. Properties, as `tests/submissions/test_submission_averaging.py` states
them for torch: evaluations leave training untouched, each averager evaluates its average (BatchNorm
statistics too for DoG, refreshed at x for schedule-free), and a checkpoint taken at an evaluation
resumes exactly, also through the trial loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

from harness import spec
from harness.averaging import BN_BATCHES
from harness.backends.jax import checkpoint
from harness.discovery import _import_file, find_submission, load_submission, load_workload
from harness.records import TrialRecord
from harness.trial import run_trial
from submissions.nadamw.common import SELF_TUNING_DEFAULTS as NADAMW_POINT
from support import TOY_WORKLOAD, NullProgress

STEPS = 25
EVALUATIONS = {1, 2, 5, 9, 14, 20, 25}  # steps after which prepare_for_eval runs
RTOL, ATOL = 2e-4, 2e-6  # float32, as tests/jax/test_jax_submissions.py
MOVED = 1e-4  # the training weights must change by more over 25 steps (DoG's self-tuning run: 3.5e-4)


def nadamw_point(**extra) -> dict:
    return {**NADAMW_POINT._asdict(), **extra}


SCHEDULE_FREE_POINT = {"learning_rate": 0.02, "one_minus_beta1": 0.1, "beta2": 0.99, "weight_decay": 0.08,
                       "warmup_factor": 0.2, "r": 0.75, "label_smoothing": 0.1, "dropout_rate": 0.0}  # warmup 10
DOG_POINT = {"reps_rel": 1e-4, "weight_decay": 1e-2, "label_smoothing": 0.1, "dropout_rate": 0.0}
EMA_POINT = nadamw_point(ema_horizon_factor=0.1)  # toy step_hint 50: β = 1 − 1/5
LAWA_POINT = nadamw_point(lawa_queue_length=3, lawa_interval_factor=0.04)  # a snapshot every 2 steps
CASES = [("schedule_free_adamw", None), ("schedule_free_adamw", SCHEDULE_FREE_POINT), ("dog", None),
         ("dog", DOG_POINT), ("ema", None), ("ema", EMA_POINT), ("lawa", None), ("lawa", LAWA_POINT)]
IDS = [f"{name}-{'self' if point is None else 'point'}" for name, point in CASES]
POINTS = {"schedule_free_adamw": SCHEDULE_FREE_POINT, "dog": DOG_POINT, "ema": EMA_POINT, "lawa": LAWA_POINT}


class Runner:
    """Drives one submission step by step as the trial loop does, in either framework; `params`
    replaces the workload's initial parameters."""

    def __init__(self, name: str, framework: str, workload: spec.Workload, point: dict | None, params=None) -> None:
        self.submission = load_submission(name, framework)
        self.workload = workload
        self.hyperparameters = spec.make_hyperparameters(point)
        self.params, self.model_state = workload.init_model_fn(0)
        self.params = self.params if params is None else params
        self.optimizer_state = self.submission.init_optimizer_state(
            workload, self.params, self.model_state, self.hyperparameters, 0)
        self.queue = workload._build_input_queue(1, "train", str(workload.data_dir), 16)
        self.step = 0

    def train_step(self) -> None:
        batch = self.submission.data_selection(self.workload, self.queue, self.optimizer_state, self.params,
                                               self.model_state, self.hyperparameters, self.step, self.step)
        self.optimizer_state, self.params, self.model_state = self.submission.update_params(
            self.workload, self.params, self.workload.model_params_types, self.model_state, self.hyperparameters,
            batch, self.workload.loss_type, self.optimizer_state, [], self.step, self.step)
        self.step += 1

    def prepare_for_eval(self) -> None:
        self.optimizer_state, self.params, self.model_state = self.submission.prepare_for_eval(
            self.workload, self.params, self.workload.model_params_types, self.model_state, self.hyperparameters,
            self.workload.loss_type, self.optimizer_state, [], self.step, self.step)

    def weights(self) -> dict[str, np.ndarray]:
        """A copy of the parameters the loop holds now, as a Flax tree of NumPy arrays."""
        if isinstance(self.params, torch.nn.Module):
            weight, bias = (p.detach().numpy().copy() for p in (self.params.head.weight, self.params.head.bias))
            return {"head": {"kernel": weight.T, "bias": bias}}
        return jax.tree_util.tree_map(np.array, self.params)


def toy(framework: str, tmp_path) -> spec.Workload:
    return load_workload(str(TOY_WORKLOAD), framework, tmp_path / "data")


def assert_tree_close(got, want, message: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{message}: {jax.tree_util.keystr(path)}")


def largest_difference(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize(("name", "point"), CASES, ids=IDS)
def test_jax_submission_matches_its_torch_twin_with_evaluations_interleaved(name, point, tmp_path):
    twin = Runner(name, "pytorch", toy("pytorch", tmp_path), point)
    initial = twin.weights()
    runner = Runner(name, "jax", toy("jax", tmp_path), point, params=jax.tree_util.tree_map(jnp.asarray, initial))
    for step in range(1, STEPS + 1):
        twin.train_step()
        runner.train_step()
        trained = twin.weights()
        assert_tree_close(runner.weights(), trained, f"{name}: training weights after step {step}")
        if step in EVALUATIONS:
            twin.prepare_for_eval()
            runner.prepare_for_eval()
            evaluated = twin.weights()
            assert_tree_close(runner.weights(), evaluated, f"{name}: evaluated weights after step {step}")
    assert largest_difference(trained, initial) > MOVED, "the optimizer did not move"
    assert largest_difference(evaluated, trained) > 10 * ATOL, "the evaluated weights are the trained ones"


@pytest.mark.parametrize("name", POINTS)
def test_evaluations_leave_training_untouched(name, tmp_path):
    workload = toy("jax", tmp_path)
    evaluated, plain = Runner(name, "jax", workload, POINTS[name]), Runner(name, "jax", workload, POINTS[name])
    for _ in range(12):
        evaluated.train_step()
        plain.train_step()
        trained = plain.weights()
        np.testing.assert_equal(evaluated.weights(), trained)
        evaluated.prepare_for_eval()
    assert largest_difference(evaluated.weights(), trained) > 10 * ATOL  # the last evaluation was not at θ


def test_ema_evaluates_the_moving_average_of_nadamw(tmp_path):
    workload = toy("jax", tmp_path)
    ema, plain = Runner("ema", "jax", workload, EMA_POINT), Runner("nadamw", "jax", workload, nadamw_point())
    average = plain.weights()
    for _ in range(12):
        ema.train_step()
        plain.train_step()
        average = jax.tree_util.tree_map(lambda a, w: 0.8 * a + 0.2 * w, average, plain.weights())
        np.testing.assert_equal(ema.weights(), plain.weights())
        ema.prepare_for_eval()
        assert_tree_close(ema.weights(), average, "EMA", rtol=1e-6, atol=1e-7)


def test_lawa_evaluates_the_mean_of_the_latest_snapshots_once_it_has_k(tmp_path):
    workload = toy("jax", tmp_path)
    lawa, plain = Runner("lawa", "jax", workload, LAWA_POINT), Runner("nadamw", "jax", workload, nadamw_point())
    snapshots = []
    for step in range(1, 13):
        lawa.train_step()
        plain.train_step()
        if step % 2 == 0:
            snapshots.append(plain.weights())
        lawa.prepare_for_eval()
        if len(snapshots) < 3:
            np.testing.assert_equal(lawa.weights(), plain.weights())
        else:
            mean = jax.tree_util.tree_map(lambda *ws: sum(ws) / 3, *snapshots[-3:])
            assert_tree_close(lawa.weights(), mean, f"LAWA after step {step}", rtol=1e-6, atol=1e-7)
    lawa.train_step()
    plain.train_step()
    np.testing.assert_equal(lawa.weights(), plain.weights())


class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool, dropout_rate=None):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(nn.Dense(8)(x))
        return nn.Dense(3, name="head")(nn.relu(x))


def batch_norm_toy(tmp_path) -> spec.Workload:
    workload = toy("jax", tmp_path)

    class BatchNormToy(type(workload)):
        def build_model(self) -> nn.Module:
            return BatchNormNet()

    return BatchNormToy(workload.data_dir)


def test_dog_evaluates_the_polynomial_decay_average_of_weights_and_batch_norm_statistics(tmp_path):
    runner = Runner("dog", "jax", batch_norm_toy(tmp_path), DOG_POINT)
    average = None
    for t in range(1, 13):
        runner.train_step()
        live = jax.tree_util.tree_map(np.array, (runner.params, runner.model_state))
        weight = 9.0 / (t + 8.0)  # (1 + γ)/(t + γ), γ = 8
        average = live if average is None else jax.tree_util.tree_map(
            lambda a, x: weight * x + (1 - weight) * a, average, live)
        runner.prepare_for_eval()
        assert_tree_close((runner.params, runner.model_state), average, f"DoG's average after step {t}",
                          rtol=1e-5, atol=1e-7)
    assert largest_difference(average[1], live[1]) > 1e-3  # the statistics' average is not the live statistics


def test_dog_self_tuning_takes_the_packages_reps_rel_for_the_model(tmp_path):
    """r_ε = reps_rel (1 + ‖x₀‖) with reps_rel 1e-4 for a model with BatchNorm, else 1e-6, as torch.py."""
    module = _import_file("dog_jax_reps_rel", find_submission("dog", "jax").path)
    for workload, reps_rel in [(batch_norm_toy(tmp_path), 1e-4), (toy("jax", tmp_path), 1e-6)]:
        params, _ = workload.init_model_fn(0)
        state = module.make_optimizer(params, None, workload).init(params)
        dog_state = next(s for s in state if hasattr(s, "max_dist"))
        norm = np.sqrt(sum(float(np.sum(np.square(p))) for p in jax.tree_util.tree_leaves(params)))
        np.testing.assert_allclose(dog_state.max_dist, reps_rel * (1 + norm), rtol=1e-6)


class CountingQueue:
    def __init__(self, queue) -> None:
        self.queue, self.consumed = queue, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.consumed += 1
        return next(self.queue)


def test_schedule_free_refreshes_batch_norm_statistics_at_x_from_training_batches(tmp_path):
    runner = Runner("schedule_free_adamw", "jax", batch_norm_toy(tmp_path), SCHEDULE_FREE_POINT)
    runner.queue = CountingQueue(runner.queue)
    for _ in range(3):
        runner.train_step()
    trained_state, y = runner.model_state, runner.params
    runner.prepare_for_eval()
    assert runner.queue.consumed == 3 + BN_BATCHES

    def refreshed_at(params):
        """The statistics after the BN_BATCHES batches that follow the 3 trained on, forward at `params`."""
        workload, model_state = runner.workload, trained_state
        forward = jax.jit(lambda model_state, batch: workload.model_fn(
            params, batch, model_state, spec.ForwardPassMode.TRAIN, None, update_batch_norm=True)[1])
        queue = workload._build_input_queue(1, "train", str(workload.data_dir), 16)
        for index in range(3 + BN_BATCHES):
            batch = next(queue)
            model_state = forward(model_state, batch) if index >= 3 else model_state
        return model_state

    assert_tree_close(runner.model_state, refreshed_at(runner.params), "statistics at x", rtol=1e-5, atol=1e-6)
    assert largest_difference(runner.model_state, refreshed_at(y)) > 1e-4  # x, not y
    assert largest_difference(runner.model_state, trained_state) > 1e-2

    plain = Runner("schedule_free_adamw", "jax", toy("jax", tmp_path), None)  # no BatchNorm: no extra batches
    plain.queue = CountingQueue(plain.queue)
    plain.train_step()
    plain.prepare_for_eval()
    assert plain.queue.consumed == 1


@pytest.mark.parametrize("name", POINTS)
def test_a_checkpoint_taken_at_evaluation_resumes_exactly(name, tmp_path):
    """The harness checkpoints right after evaluating: the evaluated weights as the parameters."""
    workload = toy("jax", tmp_path)
    uninterrupted, interrupted = (Runner(name, "jax", workload, POINTS[name]) for _ in range(2))
    for runner in (uninterrupted, interrupted):
        for _ in range(STEPS // 2):
            runner.train_step()
        runner.prepare_for_eval()
    path = tmp_path / "state.msgpack"
    warnings = checkpoint.save(path, interrupted.params, interrupted.model_state, interrupted.optimizer_state, {
        "eval_results": []})
    assert warnings == []
    resumed = Runner(name, "jax", workload, POINTS[name])
    resumed.params, resumed.model_state, resumed.optimizer_state, _ = checkpoint.load(
        path, resumed.params, resumed.optimizer_state)
    np.testing.assert_equal(resumed.weights(), uninterrupted.weights())  # it resumes at the evaluated weights
    for _ in range(STEPS // 2):  # the trial loop skips the batches consumed before the checkpoint
        next(resumed.queue)
    resumed.step = STEPS // 2
    for _ in range(STEPS // 2):
        uninterrupted.train_step()
        resumed.train_step()
        np.testing.assert_equal(resumed.weights(), uninterrupted.weights())
    for runner in (uninterrupted, resumed):
        runner.prepare_for_eval()
    np.testing.assert_equal(resumed.weights(), uninterrupted.weights())


def _trial(name: str, tmp_path, folder: str, steps: int) -> TrialRecord:
    record = TrialRecord(tmp_path / folder)
    outcome = run_trial(toy("jax", tmp_path), load_submission(name, "jax"), POINTS[name], 0, float("inf"), record,
                        NullProgress(), max_global_steps=steps, eval_every_steps=4,
                        checkpoint=tmp_path / folder / "checkpoint" / "state.msgpack")
    assert outcome.error is None and outcome.warnings == [], (outcome.error, outcome.warnings)
    return record


@pytest.mark.parametrize("name", POINTS)
def test_a_resumed_trial_ends_exactly_as_an_uninterrupted_one(name, tmp_path):
    whole = _trial(name, tmp_path, "whole", 12)
    _trial(name, tmp_path, "interrupted", 8)
    resumed = _trial(name, tmp_path, "interrupted", 12)
    assert [row["global_step"] for row in resumed.eval_rows] == [1, 4, 8, 12]
    assert resumed.eval_rows[-1]["preemption_count"] == 1
    metrics = [{k: v for k, v in row.items() if "/" in k} for row in (whole.eval_rows[-1], resumed.eval_rows[-1])]
    assert metrics[0] == metrics[1]
    assert metrics[0]["train/loss"] < whole.eval_rows[0]["train/loss"]  # it trained

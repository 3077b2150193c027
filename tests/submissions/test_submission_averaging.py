"""Evaluation at averaged weights: `prepare_for_eval` puts the average in, the next `update_params`
puts the training weights back, training is unaffected, and a checkpoint taken in between resumes
exactly. Also the schedule-free train/eval switching and its BatchNorm refresh."""

from __future__ import annotations

import torch
from torch import nn

from harness import spec
from harness.backends.torch import checkpoint as torch_checkpoint
from harness.discovery import load_submission
from submissions.nadamw.torch import SELF_TUNING_DEFAULTS as NADAMW_POINT
from harness.backends.torch.averaging import BN_BATCHES

STEPS = 12


class Runner:
    """Drives one submission on a workload step by step, as the harness's trial loop does."""

    def __init__(self, name: str, workload: spec.Workload, point: dict | None) -> None:
        self.submission = load_submission(name, "pytorch")
        self.workload = workload
        self.hyperparameters = spec.make_hyperparameters(point)
        self.model, self.model_state = workload.init_model_fn(0)
        self.optimizer_state = self.submission.init_optimizer_state(
            workload, self.model, self.model_state, self.hyperparameters, 0
        )
        self.queue = workload._build_input_queue(1, "train", "", 16)
        self.step = 0

    def train_step(self) -> None:
        torch.manual_seed(self.step)
        batch = self.submission.data_selection(
            self.workload, self.queue, self.optimizer_state, self.model, self.model_state, self.hyperparameters,
            self.step, self.step,
        )
        self.optimizer_state, self.model, self.model_state = self.submission.update_params(
            self.workload, self.model, self.workload.model_params_types, self.model_state, self.hyperparameters,
            batch, self.workload.loss_type, self.optimizer_state, [], self.step, self.step,
        )
        self.step += 1

    def prepare_for_eval(self) -> None:
        self.optimizer_state, self.model, self.model_state = self.submission.prepare_for_eval(
            self.workload, self.model, self.workload.model_params_types, self.model_state, self.hyperparameters,
            self.workload.loss_type, self.optimizer_state, [], self.step, self.step,
        )

    def weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]


def nadamw_point(**extra) -> dict:
    return {**NADAMW_POINT._asdict(), **extra}


def assert_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_ema_evaluates_the_moving_average_and_leaves_training_untouched(toy_workload):
    point = nadamw_point(ema_horizon_factor=0.1)  # toy step_hint 50: β = 1 - 1/5
    ema, plain = Runner("ema", toy_workload, point), Runner("nadamw", toy_workload, nadamw_point())
    average = ema.weights()
    for _ in range(STEPS):
        ema.train_step()
        plain.train_step()
        average = [0.8 * a + 0.2 * w for a, w in zip(average, ema.weights())]
        assert_equal(ema.weights(), plain.weights())
        ema.prepare_for_eval()
        for got, want in zip(ema.weights(), average):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_lawa_evaluates_the_mean_of_the_latest_snapshots_once_it_has_k(toy_workload):
    point = nadamw_point(lawa_queue_length=3, lawa_interval_factor=0.04)  # a snapshot every 2 steps
    lawa, plain = Runner("lawa", toy_workload, point), Runner("nadamw", toy_workload, nadamw_point())
    snapshots = []
    for step in range(1, STEPS + 1):
        lawa.train_step()
        plain.train_step()
        if step % 2 == 0:
            snapshots.append(plain.weights())
        lawa.prepare_for_eval()
        if len(snapshots) < 3:
            assert_equal(lawa.weights(), plain.weights())
        else:
            want = [sum(ws) / 3 for ws in zip(*snapshots[-3:])]
            for got, w in zip(lawa.weights(), want):
                torch.testing.assert_close(got, w, rtol=1e-6, atol=1e-7)
    lawa.train_step()
    plain.train_step()
    assert_equal(lawa.weights(), plain.weights())


def test_dog_evaluates_the_polynomial_decay_average_of_its_package(toy_workload):
    import copy

    import dog

    point = {"reps_rel": 1e-4, "weight_decay": 0.0, "label_smoothing": 0.0, "dropout_rate": 0.0}
    runner, plain = Runner("dog", toy_workload, point), Runner("dog", toy_workload, point)
    shadow = dog.PolynomialDecayAverager(copy.deepcopy(runner.model), gamma=8.0)
    for _ in range(STEPS):
        runner.train_step()
        plain.train_step()
        shadow.model = runner.model
        shadow.step()
        runner.prepare_for_eval()
        assert_equal(runner.weights(), [p.detach() for p in shadow.averaged_model.parameters()])
    runner.train_step()
    plain.train_step()
    assert_equal(runner.weights(), plain.weights())


def test_a_checkpoint_taken_at_evaluation_resumes_exactly(toy_workload, tmp_path):
    """The harness checkpoints right after evaluating, with the average swapped in."""
    for name, point in [
        ("ema", nadamw_point(ema_horizon_factor=0.1)),
        ("lawa", nadamw_point(lawa_queue_length=2, lawa_interval_factor=0.02)),
        ("dog", None),
        ("schedule_free_adamw", None),
    ]:
        uninterrupted, interrupted = Runner(name, toy_workload, point), Runner(name, toy_workload, point)
        for runner in (uninterrupted, interrupted):
            for _ in range(STEPS // 2):
                runner.train_step()
            runner.prepare_for_eval()
        path = tmp_path / f"{name}.pt"
        torch_checkpoint.save(path, interrupted.model, interrupted.model_state, interrupted.optimizer_state, {})
        resumed = Runner(name, toy_workload, point)
        resumed.model_state, resumed.optimizer_state, _ = torch_checkpoint.load(
            path, resumed.model, resumed.optimizer_state
        )
        resumed.queue, resumed.step = uninterrupted_queue_copy(toy_workload, STEPS // 2), STEPS // 2
        for _ in range(STEPS // 2):
            uninterrupted.train_step()
            resumed.train_step()
        for got, want in zip(resumed.weights(), uninterrupted.weights()):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=lambda m: f"{name}: {m}")


def uninterrupted_queue_copy(workload: spec.Workload, consumed: int):
    queue = workload._build_input_queue(1, "train", "", 16)
    for _ in range(consumed):
        next(queue)
    return queue


def test_schedule_free_trains_at_y_evaluates_at_x_and_is_unaffected_by_evaluations(toy_workload):
    evaluated, plain = Runner("schedule_free_adamw", toy_workload, None), Runner("schedule_free_adamw", toy_workload, None)
    for _ in range(STEPS):
        evaluated.train_step()
        plain.train_step()
        optimizer = evaluated.optimizer_state["optimizer"]
        y = evaluated.weights()
        evaluated.prepare_for_eval()
        # x = (y − (1 − β₁) z) / β₁ (Defazio et al., 2024): the interpolation undone
        beta1 = optimizer.param_groups[0]["betas"][0]
        z = [optimizer.state[p]["z"] for p in evaluated.model.parameters()]
        for got, yi, zi in zip(evaluated.weights(), y, z):
            torch.testing.assert_close(got, (yi - (1 - beta1) * zi) / beta1, rtol=1e-5, atol=1e-6)
    evaluated.train_step()
    plain.train_step()
    for got, want in zip(evaluated.weights(), plain.weights()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.hidden(x))))


class CountingQueue:
    def __init__(self, queue) -> None:
        self.queue, self.consumed = queue, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.consumed += 1
        return next(self.queue)


def test_schedule_free_refreshes_batch_norm_statistics_at_x_from_training_batches(toy_workload):
    class BatchNormToy(type(toy_workload)):
        def build_model(self) -> nn.Module:
            return BatchNormNet()

    workload = BatchNormToy(toy_workload.data_dir)
    runner = Runner("schedule_free_sgd", workload, None)
    runner.queue = CountingQueue(runner.queue)
    for _ in range(3):
        runner.train_step()
    before = runner.model.norm.running_mean.clone()
    runner.prepare_for_eval()
    assert runner.queue.consumed == 3 + BN_BATCHES
    assert not torch.equal(runner.model.norm.running_mean, before)
    assert all(p.requires_grad for p in runner.model.parameters())

    plain = Runner("schedule_free_sgd", toy_workload, None)  # no BatchNorm: no extra batches
    plain.queue = CountingQueue(plain.queue)
    plain.train_step()
    plain.prepare_for_eval()
    assert plain.queue.consumed == 1

"""The trial loop's clock, stopping rules and divergence handling, checked exactly with fake time.

The fake submission "works" by advancing fake time by a known amount per step, per
prepare_for_eval, and per evaluation; the run record must account for every second as the rules
say: steps and prepare_for_eval timed, evaluation untimed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from support import NullProgress
from harness import spec
from harness.discovery import Submission, default_data_selection
from harness.records import TrialRecord
from harness.trial import run_trial

STEP_SEC, PREP_SEC, EVAL_SEC = 0.1, 0.05, 1.0


def sleepy_submission(fake_time, raise_at_step: int | None = None, nan_at_step: int | None = None) -> Submission:
    def update_params(workload, params, types, model_state, hp, batch, loss_type, opt_state, evals, step, rng,
                      train_state=None):
        fake_time.sleep(STEP_SEC)
        if step + 1 == raise_at_step:
            raise spec.TrainingCompleteError()
        if nan_at_step is not None:
            logits, _ = workload.model_fn(params, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True)
            if step + 1 == nan_at_step:
                logits = logits * float("nan")
            workload.loss_fn(batch["targets"], logits)
        return opt_state, params, model_state

    def prepare_for_eval(workload, params, types, model_state, hp, loss_type, opt_state, evals, step, rng):
        fake_time.sleep(PREP_SEC)
        return opt_state, params, model_state

    return Submission(
        name="sleepy", path=__file__, init_optimizer_state=lambda *args: {}, update_params=update_params,
        prepare_for_eval=prepare_for_eval, data_selection=default_data_selection, get_batch_size=None,
    )


@pytest.fixture
def timed_workload(toy_workload, fake_time):
    """The toy workload with evaluations that take EVAL_SEC of fake time, every 0.25 s of wall time."""
    toy_workload.eval_period_time_sec = 0.25
    evaluate = toy_workload.eval_model

    def slow_eval(*args, **kwargs):
        fake_time.sleep(EVAL_SEC)
        return evaluate(*args, **kwargs)

    toy_workload.eval_model = slow_eval
    toy_workload.validation_target_value = toy_workload.test_target_value = -1.0  # never reached
    return toy_workload


def run(workload, submission, fake_time, tmp_path, budget=100.0, max_steps=20):
    record = TrialRecord(tmp_path / "trial")
    outcome = run_trial(workload, submission, None, 0, budget, record, NullProgress(), max_steps, now=fake_time)
    return outcome, record.eval_rows


def test_steps_and_prepare_for_eval_are_timed_evaluation_is_not(timed_workload, fake_time, tmp_path):
    outcome, rows = run(timed_workload, sleepy_submission(fake_time), fake_time, tmp_path)
    # Step 1 is evaluated; then 0.25 s of wall time after an evaluation ends makes one due: every 3 steps.
    assert [r["global_step"] for r in rows] == [1, 4, 7, 10, 13, 16, 19, 20]
    for n_evals, row in enumerate(rows, start=1):
        assert row["accumulated_submission_time"] == pytest.approx(row["global_step"] * STEP_SEC + n_evals * PREP_SEC)
        assert row["accumulated_eval_time"] == pytest.approx(n_evals * EVAL_SEC)
        assert row["total_duration"] == pytest.approx(
            row["accumulated_submission_time"] + row["accumulated_eval_time"] + row["accumulated_logging_time"]
        )
    assert outcome.status == "stopped" and outcome.stop_reason == "max_global_steps"


def test_budget_is_checked_at_evaluation_points_and_nothing_is_recorded_past_it(timed_workload, fake_time, tmp_path):
    outcome, rows = run(timed_workload, sleepy_submission(fake_time), fake_time, tmp_path, budget=0.95)
    # Timed seconds at the evaluation points: 0.15, 0.5, 0.85, then 1.2 > 0.95 at step 10.
    assert [r["global_step"] for r in rows] == [1, 4, 7]
    assert outcome.status == "budget" and outcome.global_step == 10
    assert (tmp_path / "trial" / "summary.json").exists()


def test_time_to_target_is_the_first_evaluation_meeting_it_and_the_run_stops_when_test_is_met_too(
    timed_workload, fake_time, tmp_path
):
    scripted = {}

    def scripted_eval(global_batch_size, params, model_state, rng, data_dir, v2_dir, global_step):
        fake_time.sleep(EVAL_SEC)
        scripted[global_step] = {"validation/error_rate": 1.0 - 0.05 * global_step,
                                 "test/error_rate": 1.0 - 0.04 * global_step}
        return scripted[global_step]

    timed_workload.eval_model = scripted_eval
    timed_workload.validation_target_value, timed_workload.test_target_value = 0.6, 0.5
    outcome, rows = run(timed_workload, sleepy_submission(fake_time), fake_time, tmp_path, max_steps=None)
    # validation <= 0.6 from step 8 (first evaluated at 10); test <= 0.5 from step 12.5 (evaluated at 13).
    assert outcome.status == "reached"
    assert outcome.steps_to_target == 10
    assert outcome.time_to_target == pytest.approx(10 * STEP_SEC + 4 * PREP_SEC)
    assert rows[-1]["global_step"] == 13 and outcome.stop_reason == "validation and test targets reached"
    assert outcome.best_validation == pytest.approx(1.0 - 0.05 * 13)


def test_a_non_finite_training_loss_ends_the_trial_as_diverged_at_the_next_evaluation_point(
    timed_workload, fake_time, tmp_path
):
    """The losses stay on the device between evaluation points: they are fetched only where the loop
    waits for the device anyway, and the NaN of step 6 ends the trial at the evaluation point of step 7,
    within the evaluation period it appeared in, before that evaluation is recorded."""
    fetched_at, to_host, steps = [], timed_workload.to_host, []
    timed_workload.to_host = lambda tree: fetched_at.append(len(steps)) or to_host(tree)
    submission = sleepy_submission(fake_time, nan_at_step=6)
    update = submission.update_params
    submission = dataclasses.replace(
        submission, update_params=lambda *args, **kwargs: steps.append(1) or update(*args, **kwargs))
    outcome, rows = run(timed_workload, submission, fake_time, tmp_path)
    assert outcome.status == "diverged" and outcome.global_step == 7
    assert outcome.stop_reason == "non-finite training loss (nan) at step 6"
    assert [r["global_step"] for r in rows] == [1, 4]
    assert outcome.time_to_target is None
    # One fetch of the training losses per evaluation point (1, 4, 7); the evaluations' own fetches
    # (one per split) come right after the first two.
    assert [step for step in fetched_at if step not in (1, 4)] == [7]
    assert fetched_at.count(1) == fetched_at.count(4) == 4


def test_a_submission_that_fails_after_a_non_finite_loss_ends_as_diverged(timed_workload, fake_time, tmp_path):
    submission = sleepy_submission(fake_time, nan_at_step=5)
    update = submission.update_params

    def update_then_fail(*args, **kwargs):
        result = update(*args, **kwargs)
        if args[9] + 1 == 6:
            raise RuntimeError("linalg.cholesky: the input is not positive-definite")
        return result

    submission = dataclasses.replace(submission, update_params=update_then_fail)
    outcome, rows = run(timed_workload, submission, fake_time, tmp_path)
    assert outcome.status == "diverged" and outcome.global_step == 5
    assert outcome.stop_reason.startswith("non-finite training loss (nan) at step 5; then RuntimeError: linalg.cholesky")
    assert "Traceback" in outcome.error and [r["global_step"] for r in rows] == [1, 4]


def test_parameters_made_non_finite_without_a_loss_end_the_trial_as_diverged_at_the_evaluation(
    toy_workload, fake_time, tmp_path
):
    def update_params(workload, params, types, model_state, hp, batch, loss_type, opt_state, evals, step, rng):
        if step == 2:
            with torch.no_grad():
                for p in params.parameters():
                    p.fill_(float("nan"))
        return opt_state, params, model_state

    submission = Submission(name="nan", path=__file__, init_optimizer_state=lambda *args: {},
                            update_params=update_params, prepare_for_eval=None,
                            data_selection=default_data_selection, get_batch_size=None)
    toy_workload.eval_period_time_sec = 0.0  # evaluate after every step
    outcome, rows = run(toy_workload, submission, fake_time, tmp_path)
    assert outcome.status == "diverged" and outcome.global_step == 3 and [r["global_step"] for r in rows] == [1, 2, 3]
    assert outcome.stop_reason == "non-finite validation/error_rate (nan) at the evaluation after step 3" or \
        outcome.stop_reason == "non-finite validation/loss (nan) at the evaluation after step 3"
    assert outcome.best_validation == rows[1]["validation/error_rate"]


def test_training_complete_signal_gets_a_final_evaluation(timed_workload, fake_time, tmp_path):
    outcome, rows = run(timed_workload, sleepy_submission(fake_time, raise_at_step=5), fake_time, tmp_path)
    assert [r["global_step"] for r in rows] == [1, 4, 5]
    assert outcome.status == "stopped" and "training complete" in outcome.stop_reason


def test_real_training_on_the_toy_workload_reaches_its_target(toy_workload, tmp_path):
    def make_optimizer(model, hyperparameters, workload):
        return torch.optim.SGD(model.parameters(), lr=hyperparameters.learning_rate)

    from harness.backends.torch.short_form import standard_functions

    submission = Submission(name="sgd", path=__file__, prepare_for_eval=None, data_selection=default_data_selection,
                            get_batch_size=None, **standard_functions(make_optimizer))
    record = TrialRecord(tmp_path / "trial")
    outcome = run_trial(toy_workload, submission, {"learning_rate": 0.5}, 0, 60.0, record, NullProgress(), 200)
    assert outcome.status == "reached" and outcome.time_to_target > 0
    assert record.eval_rows[-1]["validation/error_rate"] <= toy_workload.validation_target_value


def test_real_sleeps_are_accounted_to_the_right_side_of_the_clock(toy_workload, tmp_path):
    """The same rules with the real clock: 20 steps of 20 ms; 2 evaluations of 150 ms, each after a
    prepare_for_eval of 30 ms. Upper bounds leave room for a busy machine, not for a misplaced sleep."""
    import time

    submission = sleepy_submission(fake_time=None)
    step, prep, evaluation = 0.02, 0.03, 0.15

    def update_params(workload, params, types, model_state, hp, batch, loss_type, opt_state, evals, i, rng,
                      train_state=None):
        time.sleep(step)
        return opt_state, params, model_state

    def prepare_for_eval(workload, params, types, model_state, hp, loss_type, opt_state, evals, i, rng):
        time.sleep(prep)
        return opt_state, params, model_state

    evaluate = toy_workload.eval_model

    def slow_eval(*args, **kwargs):
        time.sleep(evaluation)
        return evaluate(*args, **kwargs)

    toy_workload.eval_model = slow_eval
    toy_workload.eval_period_time_sec = 10.0  # evaluations at step 1 and at the last step only
    toy_workload.validation_target_value = toy_workload.test_target_value = -1.0
    submission = Submission(**{**submission.__dict__, "update_params": update_params,
                               "prepare_for_eval": prepare_for_eval})
    record = TrialRecord(tmp_path / "trial")
    run_trial(toy_workload, submission, None, 0, 100.0, record, NullProgress(), max_global_steps=20)
    last = record.eval_rows[-1]
    timed = 20 * step + 2 * prep
    assert timed <= last["accumulated_submission_time"] < timed + 0.25
    assert 2 * evaluation <= last["accumulated_eval_time"] < 2 * evaluation + 0.25

"""The trial loop: one submission, one workload, one hyperparameter point, one seed.

Clock rules (DESIGN.md): `data_selection`, `update_params`, `prepare_for_eval` and the loop's own
overhead are timed; initialisation, evaluation and logging are not. An evaluation is due after
step 1 and then once `eval_period_time_sec` of wall time has passed since the previous one ended.
The budget is checked at evaluation points: no evaluation is recorded past it. The trial ends
when the budget is spent, when validation and test targets are both met, at `max_global_steps`,
when the submission raises `TrainingCompleteError`, or at once on a non-finite training loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from harness import spec
from harness.clock import TrialClock
from harness.discovery import Submission
from harness.records import TrialRecord

TRAIN_LOSS_EVERY = 10  # steps between train.jsonl rows


@dataclass
class TrialOutcome:
    status: str  # running | reached | budget | diverged | stopped (failed is set by the caller)
    global_step: int = 0
    time_to_target: float | None = None
    steps_to_target: int | None = None
    best_validation: float | None = None
    stop_reason: str | None = None
    error: str | None = None
    test_target_reached: bool = False
    unused_hyperparameters: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return asdict(self)

    def observe(self, workload: spec.Workload, step: int, submission_time: float, results: dict) -> None:
        """Fold one evaluation into the best value, the time-to-target and the test-target flag."""
        value = results[f"validation/{workload.target_metric_name}"]
        if math.isfinite(value) and (self.best_validation is None or workload.meets_target(value, self.best_validation)):
            self.best_validation = value
        if self.time_to_target is None and workload.has_reached_validation_target(results):
            self.status, self.time_to_target, self.steps_to_target = "reached", submission_time, step
        self.test_target_reached = self.test_target_reached or workload.has_reached_test_target(results)


class Progress(Protocol):
    def on_step(self, global_step: int, clock: TrialClock) -> None: ...
    def on_eval(self, global_step: int, eval_row: dict, clock: TrialClock) -> None: ...


def trial_seeds(rng_seed: int) -> dict[str, int]:
    """Independent seeds for data order, model init, optimizer init and per-step randomness."""
    data, model, optimizer, step = np.random.SeedSequence(rng_seed).generate_state(4)
    return {"data": int(data), "model": int(model), "optimizer": int(optimizer), "step": int(step)}


def _eval_row(step: int, clock: TrialClock, results: dict, preemption_count: int) -> dict:
    return {
        "global_step": step,
        "accumulated_submission_time": clock.submission_time,
        "accumulated_eval_time": clock.eval_time,
        "accumulated_logging_time": clock.logging_time,
        "total_duration": clock.total_duration(),
        "preemption_count": preemption_count,
        **results,
    }


class CountingIterator:
    """Counts the batches taken from the input queue, so a resumed trial sees the same data."""

    def __init__(self, iterator) -> None:
        self._iterator, self.consumed = iterator, 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self._iterator)
        self.consumed += 1
        return item

    def skip(self, count: int) -> None:
        for _ in range(count):
            next(self)


def _resume(loop: dict, clock: TrialClock, input_queue: CountingIterator, record: TrialRecord) -> TrialOutcome:
    """Carry an interrupted run's seconds, data position and evaluation rows over into this one."""
    clock.restore(loop["clock"])
    input_queue.skip(loop["consumed_batches"])
    record.resume(loop["eval_row"])
    return TrialOutcome(**loop["outcome"])


def run_trial(
    workload: spec.Workload,
    submission: Submission,
    point: dict | None,
    rng_seed: int,
    budget_sec: float,
    record: TrialRecord,
    progress: Progress,
    max_global_steps: int | None = None,
    checkpoint: Path | None = None,
    now: Callable[[], float] = time.perf_counter,
) -> TrialOutcome:
    """Train until a stopping rule fires; `record` is complete after every evaluation.

    With `checkpoint`, the trial state is saved there after every evaluation (untimed, counted as
    logging), and a trial that finds one resumes from it: timed seconds carried over,
    `preemption_count` one higher. `now` is the clock's time source (tests pass a fake one).
    """
    seeds = trial_seeds(rng_seed)
    workload.set_global_seed(seeds["step"])
    hyperparameters = spec.make_hyperparameters(point)
    data_dir = str(workload.data_dir)
    input_queue = CountingIterator(
        workload._build_input_queue(seeds["data"], "train", data_dir, submission.batch_size(workload))
    )
    params, model_state = workload.init_model_fn(seeds["model"])
    optimizer_state = submission.init_optimizer_state(workload, params, model_state, hyperparameters, seeds["optimizer"])
    outcome, eval_results, train_rows, step, preemptions = TrialOutcome("running"), [], [], 0, 0
    clock = TrialClock(workload.sync, now)
    if checkpoint is not None and checkpoint.exists():
        model_state, optimizer_state, loop = workload.load_checkpoint(checkpoint, params, optimizer_state)
        step, eval_results, preemptions = loop["global_step"], loop["eval_results"], loop["preemption_count"] + 1
        outcome = _resume(loop, clock, input_queue, record)
    clock.start_timed()
    while True:
        step_rng = seeds["step"] + step
        training_complete = False
        try:
            batch = submission.data_selection(
                workload, input_queue, optimizer_state, params, model_state, hyperparameters, step, step_rng
            )
            optimizer_state, params, model_state = submission.update_params(
                workload, params, workload.model_params_types, model_state, hyperparameters, batch,
                workload.loss_type, optimizer_state, eval_results, step, step_rng,
            )
        except spec.TrainingCompleteError:
            training_complete = True
        step += 1
        outcome.global_step = step
        loss = workload.latest_train_loss()
        if loss is not None and not math.isfinite(loss):
            clock.stop_timed()
            outcome.status = "diverged" if outcome.time_to_target is None else outcome.status
            outcome.stop_reason = f"non-finite training loss ({loss}) at step {step}"
            break
        if loss is not None and step % TRAIN_LOSS_EVERY == 0:
            train_rows.append({"global_step": step, "loss": loss})
        progress.on_step(step, clock)
        at_max_steps = max_global_steps is not None and step >= max_global_steps
        if not (step == 1 or at_max_steps or training_complete
                or clock.seconds_since_last_eval() >= workload.eval_period_time_sec):
            continue
        if submission.prepare_for_eval is not None:
            optimizer_state, params, model_state = submission.prepare_for_eval(
                workload, params, workload.model_params_types, model_state, hyperparameters,
                workload.loss_type, optimizer_state, eval_results, step, step_rng,
            )
        clock.stop_timed()
        if clock.submission_time > budget_sec:
            outcome.status = "budget" if outcome.time_to_target is None else outcome.status
            outcome.stop_reason = f"timed budget of {budget_sec:g} s spent"
            break
        with clock.untimed("eval"):
            results = workload.eval_model(
                workload.eval_batch_size, params, model_state, step_rng, data_dir, None, step
            )
        with clock.untimed("logging"):
            eval_results.append((step, results))
            outcome.observe(workload, step, clock.submission_time, results)
            row = _eval_row(step, clock, results, preemptions)
            if checkpoint is not None:
                loop = {"global_step": step, "eval_results": eval_results, "preemption_count": preemptions,
                        "outcome": outcome.summary(), "clock": clock.state(),
                        "consumed_batches": input_queue.consumed, "eval_row": row}
                workload.save_checkpoint(checkpoint, params, model_state, optimizer_state, loop)
            record.add_eval(row)
            record.add_train(train_rows)
            train_rows = []
            record.write_summary(outcome.summary())
            progress.on_eval(step, row, clock)
        if outcome.time_to_target is not None and outcome.test_target_reached:
            outcome.stop_reason = "validation and test targets reached"
            break
        if at_max_steps or training_complete:
            outcome.status = "reached" if outcome.time_to_target is not None else "stopped"
            outcome.stop_reason = "max_global_steps" if at_max_steps else "submission signalled training complete"
            break
        clock.start_timed()
    record.add_train(train_rows)
    if hyperparameters is not None:
        outcome.unused_hyperparameters = sorted(set(point) - type(hyperparameters).fields_read)
    return outcome

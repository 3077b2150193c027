"""The trial loop: one submission, one workload, one hyperparameter point, one seed.

Clock rules (DESIGN.md): `data_selection`, `update_params`, `prepare_for_eval` and the loop's own
overhead are timed; initialisation, evaluation and logging are not. An evaluation is due after
step 1 and then once `eval_period_time_sec` of wall time has passed since the previous one ended.
The budget is checked at evaluation points: no evaluation is recorded past it. The trial ends
when the budget is spent, when validation and test targets are both met, at `max_global_steps`,
when the submission raises `TrainingCompleteError`, or on a non-finite training loss or validation
loss or target metric. Training losses stay on the device until the next evaluation point, where the
clock waits for the device anyway (`harness/train_loss.py`): a NaN ends the trial there, as diverged
at the step it appeared, with no device→host transfer in the timed steps.
An exception of the submission ends the trial as failed, with the step it reached (as diverged, if a
non-finite training loss came first).
Other processes' CPU use during the timed steps is measured (`harness/contention.py`); a trial
that ran too many of its steps on a busy machine is flagged `contended` in its summary.

AlgoPerf extras: `update_params` gets a read-only `train_state` when its signature declares one;
`workload.metrics_logger` collects what the submission logs, written to `metrics.jsonl` at each
evaluation; a `get_batch_size` that does not know the workload falls back to its reference size.

Several devices (`Devices`): the batch size is global, as in AlgoPerf, and each device takes an equal
part of every batch. Where the devices are driven by several processes (PyTorch's torchrun ranks),
each runs this loop: they take rank 0's decisions (evaluate, training complete, budget spent), sum
the training losses over the processes before checking them, and only rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from harness import spec
from harness.clock import TrialClock
from harness.contention import ContentionMonitor
from harness.discovery import Submission
from harness.errors import UserInputError
from harness.metrics_logger import MetricsLogger
from harness.records import TrialRecord
from harness.train_loss import NonFinite, TrainLosses

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
    batch_size: int | None = None
    warnings: list[str] = field(default_factory=list)
    contended: bool = False
    contention: dict[str, Any] | None = None  # ContentionMonitor.summary()

    def summary(self) -> dict[str, Any]:
        return asdict(self)

    def warn(self, message: str | None) -> None:
        """Say `message` on stderr (the trial's log) and keep it in the summary, once."""
        if message and message not in self.warnings:
            self.warnings.append(message)
            print(f"warning: {message}", file=sys.stderr)

    def diverge(self, bad: NonFinite) -> None:
        """End as diverged (unless the target was already reached) on a non-finite training loss."""
        self.status = "diverged" if self.time_to_target is None else self.status
        self.stop_reason = f"non-finite training loss ({bad.loss}) at step {bad.step}"

    def note_contention(self, monitor: ContentionMonitor) -> None:
        self.contention, self.contended = monitor.summary(), monitor.contended

    def fail(self, exc: BaseException) -> None:
        """End as failed by the submission's exception, keeping the step it reached."""
        self.status, self.stop_reason = "failed", f"{type(exc).__name__}: {exc}"
        self.error = "".join(traceback.format_exception(exc))

    def observe(self, workload: spec.Workload, step: int, submission_time: float, results: dict) -> bool:
        """Fold one evaluation into the best value, the time-to-target and the test-target flag.

        Returns False, and ends the outcome as diverged, when the validation loss or target metric is
        not finite (whatever the training loss said: a submission need not call `loss_fn`)."""
        value = results[f"validation/{workload.target_metric_name}"]
        keys = (f"validation/{workload.target_metric_name}", "validation/loss")
        bad = next((key for key in keys if key in results and not math.isfinite(results[key])), None)
        if bad is not None:
            self.status = "diverged" if self.time_to_target is None else self.status
            self.stop_reason = f"non-finite {bad} ({results[bad]}) at the evaluation after step {step}"
            return False
        if math.isfinite(value) and (self.best_validation is None or workload.meets_target(value, self.best_validation)):
            self.best_validation = value
        if self.time_to_target is None and workload.has_reached_validation_target(results):
            self.status, self.time_to_target, self.steps_to_target = "reached", submission_time, step
        self.test_target_reached = self.test_target_reached or workload.has_reached_test_target(results)
        return True


class Devices(Protocol):
    """The devices a trial runs on (`--num_devices`), and the processes that drive them."""

    count: int  # devices; every batch is split evenly across them
    is_main: bool  # the process that writes records and checkpoints (rank 0)

    def place_model(self, params: Any, model_state: Any) -> tuple[Any, Any]:
        """The freshly initialised model as the devices hold it (wrapped for data parallelism, replicated)."""

    def first_says(self, *flags: bool) -> tuple[bool, ...]:
        """The main process's `flags`, in every process (its clock decides for all)."""

    def sum(self, values: list) -> list:
        """The framework's scalars in `values` (a list of tuples) summed over the processes."""


class OneDevice:
    """One device in one process: every `Devices` operation is the identity."""

    count, is_main = 1, True

    def place_model(self, params, model_state):
        return params, model_state

    def first_says(self, *flags: bool) -> tuple[bool, ...]:
        return flags

    def sum(self, values: list) -> list:
        return values


def check_divisible(batch_size: int, devices: Devices) -> None:
    """Each device takes an equal, contiguous part of every training batch."""
    if batch_size % devices.count:
        raise UserInputError(f"the global batch size {batch_size} does not split evenly across the trial's "
                             f"{devices.count} devices; choose a batch size (get_batch_size) that is a multiple "
                             f"of {devices.count}, or another --num_devices")


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


def _resume(loop: dict, clock: TrialClock, input_queue: CountingIterator, record: TrialRecord,
            outcome: TrialOutcome) -> None:
    """Carry an interrupted run's seconds, data position, evaluation rows and outcome over into this one."""
    clock.restore(loop["clock"])
    input_queue.skip(loop["consumed_batches"])
    record.resume(loop["eval_row"])
    outcome.__dict__.update(loop["outcome"], warnings=outcome.warnings)


def _train_state(clock: TrialClock, outcome: TrialOutcome, training_complete: bool) -> Mapping[str, Any]:
    """AlgoPerf's read-only `train_state` (its keys and meanings); times are seconds of the clock's
    time source (`last_eval_time`, `last_step_end_time`) or accumulated seconds. Read without a
    device sync, so `accumulated_submission_time` may lag queued device work."""
    return MappingProxyType({
        "validation_goal_reached": outcome.time_to_target is not None,
        "test_goal_reached": outcome.test_target_reached,
        "is_time_remaining": outcome.status != "budget",
        "last_eval_time": clock.last_eval_end,
        "training_complete": training_complete,
        "accumulated_submission_time": clock.timed_estimate(),
        "accumulated_eval_time": clock.eval_time,
        "accumulated_logging_time": clock.logging_time,
        "last_step_end_time": clock.now(),
    })


def _initial_state(workload, submission, hyperparameters, seeds: dict[str, int], devices: Devices) -> tuple:
    """(params, model_state, optimizer_state) as the trial starts."""
    params, model_state = devices.place_model(*workload.init_model_fn(workload.random_state(seeds["model"])))
    optimizer_state = submission.init_optimizer_state(workload, params, model_state, hyperparameters,
                                                      workload.random_state(seeds["optimizer"]))
    return params, model_state, optimizer_state


def _set_aside_unloadable(checkpoint: Path, exc: Exception, record: TrialRecord, outcome: TrialOutcome,
                          devices: Devices) -> None:
    """Say that `checkpoint` did not load, and keep it and the rows written before aside for a fresh start."""
    reason = str(exc).splitlines()[0] if str(exc) else ""
    outcome.warn(f"checkpoint {checkpoint} could not be loaded ({type(exc).__name__}: {reason}); it is kept as "
                 f"{checkpoint.name}.unloadable and the trial restarts from step 0")
    if devices.is_main:
        checkpoint.replace(checkpoint.with_name(f"{checkpoint.name}.unloadable"))
    record.set_aside(".before_restart")


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
    eval_every_steps: int | None = None,
    eval_period_sec: float | None = None,
    contention: ContentionMonitor | None = None,
    devices: Devices | None = None,
) -> TrialOutcome:
    """Train until a stopping rule fires; `record` is complete after every evaluation.

    With `checkpoint`, the trial state is saved there after every evaluation (untimed, counted as
    logging), and a trial that finds one resumes from it: timed seconds carried over,
    `preemption_count` one higher. `now` is the clock's time source (tests pass a fake one).
    Evaluations follow step 1 and then every `eval_period_sec` of wall time (default: the workload's
    `eval_period_time_sec`), or with `eval_every_steps` every that many steps instead of the wall
    clock, so a rerun with the same seed evaluates the same steps. `contention` measures other
    processes' CPU use during the timed steps (default: a `ContentionMonitor` on this machine).
    `devices` spreads the trial over several devices (default: `OneDevice`).
    An exception raised by the submission (or the workload) returns a failed outcome.
    """
    outcome = TrialOutcome("running")
    devices = devices or OneDevice()
    losses = TrainLosses(workload.take_train_loss, workload.to_host, TRAIN_LOSS_EVERY, devices.sum)
    try:
        _run(workload, submission, point, rng_seed, budget_sec, record, progress, max_global_steps, checkpoint,
             now, eval_every_steps, eval_period_sec or workload.eval_period_time_sec,
             contention or ContentionMonitor(), losses, outcome, devices)
    except Exception as exc:  # noqa: BLE001 - any submission bug becomes a failed trial
        outcome.fail(exc)
        bad = _pending_divergence(losses)
        if bad is not None:  # the exception followed a non-finite loss: that is the trial's end
            error = outcome.stop_reason
            outcome.diverge(bad)
            outcome.stop_reason += f"; then {error}"
        record.add_train(losses.take_rows())
    return outcome


def _pending_divergence(losses: TrainLosses) -> NonFinite | None:
    """This process's first non-finite training loss since the last check (other processes may be gone)."""
    try:
        return losses.check(across_processes=False)
    except Exception:  # noqa: BLE001 - the device itself failed; the exception already says so
        return None


def _run(workload, submission, point, rng_seed, budget_sec, record, progress, max_global_steps, checkpoint, now,
         eval_every_steps, eval_period_sec, monitor: ContentionMonitor, losses: TrainLosses,
         outcome: TrialOutcome, devices: Devices) -> None:
    """`run_trial`'s loop; it leaves its result in `outcome` (so a failure keeps the step reached)."""
    seeds = trial_seeds(rng_seed)
    workload.set_global_seed(seeds["step"])
    hyperparameters = spec.make_hyperparameters(point)
    data_dir = str(workload.data_dir)
    outcome.batch_size, batch_size_warning = submission.batch_size(workload)
    outcome.warn(batch_size_warning)
    check_divisible(outcome.batch_size, devices)
    input_queue = CountingIterator(workload._build_input_queue(seeds["data"], "train", data_dir, outcome.batch_size))
    workload.attach_metrics_logger(MetricsLogger())
    params, model_state, optimizer_state = _initial_state(workload, submission, hyperparameters, seeds, devices)
    eval_results, step, preemptions = [], 0, 0
    clock = TrialClock(workload.sync, now, segments=monitor)
    if checkpoint is not None and checkpoint.exists():
        try:
            params, model_state, optimizer_state, loop = workload.load_checkpoint(checkpoint, params, optimizer_state)
        except Exception as exc:  # noqa: BLE001 - a corrupt or crafted file: report it and start afresh
            _set_aside_unloadable(checkpoint, exc, record, outcome, devices)
            workload.set_global_seed(seeds["step"])
            params, model_state, optimizer_state = _initial_state(workload, submission, hyperparameters, seeds, devices)
        else:
            step, eval_results, preemptions = loop["global_step"], loop["eval_results"], loop["preemption_count"] + 1
            _resume(loop, clock, input_queue, record, outcome)
            monitor.restore(outcome.contention)
    wants_train_state = submission.update_params_takes_train_state
    training_complete = False
    clock.start_timed()
    while True:
        step_rng = workload.random_state(seeds["step"] + step)
        extra = {"train_state": _train_state(clock, outcome, training_complete)} if wants_train_state else {}
        try:
            batch = submission.data_selection(
                workload, input_queue, optimizer_state, params, model_state, hyperparameters, step, step_rng
            )
            optimizer_state, params, model_state = submission.update_params(
                workload, params, workload.model_params_types, model_state, hyperparameters, batch,
                workload.loss_type, optimizer_state, eval_results, step, step_rng, **extra,
            )
            workload.note_step_outputs((optimizer_state, params, model_state))
        except spec.TrainingCompleteError:
            training_complete = True
        step += 1
        monitor.step()
        outcome.global_step = step
        losses.after_step(step)
        progress.on_step(step, clock)
        at_max_steps = max_global_steps is not None and step >= max_global_steps
        due = (step % eval_every_steps == 0 if eval_every_steps
               else clock.seconds_since_last_eval() >= eval_period_sec)
        evaluate, training_complete = devices.first_says(step == 1 or at_max_steps or training_complete or due,
                                                         training_complete)
        if not evaluate:
            continue
        bad = losses.check()
        if bad is not None:
            clock.stop_timed()
            outcome.diverge(bad)
            break
        if submission.prepare_for_eval is not None:
            optimizer_state, params, model_state = submission.prepare_for_eval(
                workload, params, workload.model_params_types, model_state, hyperparameters,
                workload.loss_type, optimizer_state, eval_results, step, step_rng,
            )
            workload.note_step_outputs((optimizer_state, params, model_state))
        clock.stop_timed()
        if devices.first_says(clock.submission_time > budget_sec)[0]:
            outcome.status = "budget" if outcome.time_to_target is None else outcome.status
            outcome.stop_reason = f"timed budget of {budget_sec:g} s spent"
            break
        with clock.untimed("eval"):
            results = workload.eval_model(
                workload.eval_batch_size, params, model_state, step_rng, data_dir, None, step
            )
        with clock.untimed("logging"):
            eval_results.append((step, results))
            finite = outcome.observe(workload, step, clock.submission_time, results)
            outcome.note_contention(monitor)
            row = _eval_row(step, clock, results, preemptions)
            if checkpoint is not None and devices.is_main:
                loop = {"global_step": step, "eval_results": eval_results, "preemption_count": preemptions,
                        "outcome": outcome.summary(), "clock": clock.state(),
                        "consumed_batches": input_queue.consumed, "eval_row": row}
                for message in workload.save_checkpoint(checkpoint, params, model_state, optimizer_state, loop):
                    outcome.warn(message)
            record.add_eval(row)
            record.add_train(losses.take_rows())
            record.add_metrics(workload.metrics_logger.take())
            record.write_summary(outcome.summary())
            progress.on_eval(step, row, clock)
        if not finite:
            break
        if outcome.time_to_target is not None and outcome.test_target_reached:
            outcome.stop_reason = "validation and test targets reached"
            break
        if at_max_steps or training_complete:
            outcome.status = "reached" if outcome.time_to_target is not None else "stopped"
            outcome.stop_reason = "max_global_steps" if at_max_steps else "submission signalled training complete"
            break
        clock.start_timed()
    outcome.note_contention(monitor)
    record.add_train(losses.take_rows())
    record.add_metrics(workload.metrics_logger.take())
    if hyperparameters is not None:
        outcome.unused_hyperparameters = sorted(set(point) - type(hyperparameters).fields_read)

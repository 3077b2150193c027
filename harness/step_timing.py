"""Timed seconds of the harness's own trial loop, in blocks of steps (calibration and benchmarks).

`time_harness_blocks` runs one real trial (`run_trial`, seed `SEED`) for a warm-up of
max(2, block_steps) steps and `blocks` blocks of `block_steps` steps, evaluating only after step 1
and after the last step (both outside every block). Its progress hook marks a boundary after step
`warmup + j × block_steps`: there it waits for the device, reads the clock (ending block j − 1),
calls `between(j)` (a benchmark runs its comparison there; what it does is in no block), waits for
the device and reads the clock again (starting block j). A block is thus exactly `block_steps`
iterations of the trial loop: data selection, `update_params`, the divergence and contention
checks, the progress call and the evaluation-due check.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

from harness import spec
from harness.contention import ContentionMonitor
from harness.discovery import Submission
from harness.records import TrialRecord
from harness.trial import run_trial

SEED = 0


def warmup_steps(block_steps: int) -> int:
    """Steps before the first boundary: at least 2, so the untimed evaluation after step 1 lies outside every block."""
    return max(2, block_steps)


class BlockBoundaries:
    """A `run_trial` progress hook that times the trial loop in blocks of `block_steps` steps."""

    def __init__(self, warmup: int, block_steps: int, clock: Callable[[], float], sync: Callable[[], None],
                 between: Callable[[int], None]) -> None:
        self.warmup, self.block_steps, self.clock, self.sync, self.between = warmup, block_steps, clock, sync, between
        self.seconds: list[float] = []  # one entry per block
        self._start: float | None = None

    def on_step(self, global_step: int, clock) -> None:
        offset = global_step - self.warmup
        if offset < 0 or offset % self.block_steps:
            return
        self.sync()
        now = self.clock()
        if self._start is not None:
            self.seconds.append(now - self._start)
        self.between(offset // self.block_steps)
        self.sync()
        self._start = self.clock()

    def on_eval(self, global_step: int, eval_row: dict, clock) -> None: ...


def time_harness_blocks(workload: spec.Workload, submission: Submission, point: dict | None, blocks: int,
                        block_steps: int, clock: Callable[[], float] = time.perf_counter,
                        between: Callable[[int], None] = lambda boundary: None,
                        contention: ContentionMonitor | None = None) -> tuple[list[float], dict]:
    """The seconds of each block and the trial's last evaluation row; `contention` watches the
    other processes meanwhile (default: a fresh monitor)."""
    steps = warmup_steps(block_steps) + blocks * block_steps
    boundaries = BlockBoundaries(warmup_steps(block_steps), block_steps, clock, workload.sync, between)
    with tempfile.TemporaryDirectory(prefix="timetrial_blocks_") as tmp:
        record = TrialRecord(Path(tmp))
        outcome = run_trial(workload, submission, point, SEED, float("inf"), record, boundaries,
                            max_global_steps=steps, eval_every_steps=steps, contention=contention)
        if outcome.status == "failed":
            raise RuntimeError(f"the harness run failed at step {outcome.global_step}:\n{outcome.error}")
        last_row = record.eval_rows[-1]
    if len(boundaries.seconds) != blocks:
        raise RuntimeError(f"expected {blocks} harness blocks, timed {len(boundaries.seconds)} "
                           f"(the trial stopped at step {outcome.global_step}: {outcome.stop_reason})")
    return boundaries.seconds, last_row

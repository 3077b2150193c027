"""Every step's training loss, checked for divergence where the trial loop already waits for the device.

After each step the backend's `take_train_loss()` hands over the (summed loss, example count) of the
step's training `loss_fn` call as the framework's values, without a device→host transfer. `TrainLosses`
keeps them; at an evaluation point (where the clock waits for the device anyway) `check()` fetches
them all in one `to_host` call, keeps every `every`-th step's mean loss for train.jsonl, and reports
the first non-finite one. A NaN thus ends the trial within the evaluation period it happened in.
In a trial of several processes (one per device), each process's (summed loss, example count) covers
its part of the batch: `sum_over_processes` adds them up first, so every process sees the global mean
loss and takes the same decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


def _same(values: list) -> list:
    return values


@dataclass(frozen=True)
class NonFinite:
    step: int
    loss: float


class TrainLosses:
    def __init__(self, take: Callable[[], Any], to_host: Callable[[Any], Any], every: int,
                 sum_over_processes: Callable[[list], list] = _same) -> None:
        self._take, self._to_host, self.every, self._sum = take, to_host, every, sum_over_processes
        self._pending: list[tuple[int, Any]] = []
        self.rows: list[dict[str, float]] = []  # {"global_step", "loss"} for train.jsonl, since the last `take_rows`

    def after_step(self, step: int) -> None:
        taken = self._take()
        if taken is not None:
            self._pending.append((step, taken))

    def check(self, across_processes: bool = True) -> NonFinite | None:
        """Fetch the pending losses (summed over the processes unless told not to: after a failure the
        others may be gone); the first non-finite one, if any (its step's row is kept)."""
        if not self._pending:
            return None
        steps, taken = zip(*self._pending)
        self._pending = []
        taken = self._sum(list(taken)) if across_processes else list(taken)
        for step, (summed, count) in zip(steps, self._to_host(taken)):
            loss = float(summed) / float(count)
            if not math.isfinite(loss):
                return NonFinite(step, loss)
            if step % self.every == 0:
                self.rows.append({"global_step": step, "loss": loss})
        return None

    def take_rows(self) -> list[dict[str, float]]:
        rows, self.rows = self.rows, []
        return rows

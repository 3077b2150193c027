"""`workload.metrics_logger`: what a submission logs for itself (AlgoPerf's `MetricLogger` API).

A submission calls `workload.metrics_logger.append_scalar_metrics({'loss': ..., 'grad_norm': ...},
global_step)` inside its timed step; the rows wait in memory (no file I/O on the clock) and the
trial loop writes them to the trial's `metrics.jsonl` at each evaluation, as untimed logging.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping


def _scalar(name: str, value: Any) -> float | bool | str:
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Number) or hasattr(value, "item"):
        number = float(value.item() if hasattr(value, "item") else value)
        return number if math.isfinite(number) else str(number)  # JSON has no NaN or infinity
    raise TypeError(f"metrics_logger: metric {name!r} is a {type(value).__name__}, not a scalar")


class MetricsLogger:
    """Collects the scalar metrics a submission logs, keyed by global step."""

    def __init__(self) -> None:
        self._pending: list[dict] = []

    def append_scalar_metrics(
        self, metrics: Mapping[str, Any], global_step: int, preemption_count: int | None = None,
        is_eval: bool = False,
    ) -> None:
        """Log `metrics` (numbers, 0-d tensors or arrays, booleans, strings) at `global_step`."""
        del is_eval  # the harness records evaluations itself
        row = {"global_step": int(global_step), **{str(k): _scalar(k, v) for k, v in metrics.items()}}
        if preemption_count is not None:
            row["preemption_count"] = int(preemption_count)
        self._pending.append(row)

    def take(self) -> list[dict]:
        """The rows logged since the last call, oldest first."""
        rows, self._pending = self._pending, []
        return rows

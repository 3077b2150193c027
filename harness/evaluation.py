"""Accumulating a split's evaluation over its batches, framework-free.

A workload's `eval_sums` gives, per batch, scalars (summed losses, error counts, example counts) and
arrays with a leading batch axis (scores for a metric that needs the whole split, such as average
precision). `BatchSums` keeps them as the framework made them (on the device: the evaluation loop
never waits for it) and, at the end, fetches them in one `to_host` call: scalars are summed in
float64, batch after batch; arrays are concatenated as float32.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


class BatchSums:
    def __init__(self) -> None:
        self._values: dict[str, list[Any]] = {}

    def add(self, batch_sums: dict[str, Any]) -> None:
        for key, value in batch_sums.items():
            self._values.setdefault(key, []).append(value)

    def result(self, to_host: Callable[[Any], Any]) -> dict[str, float | np.ndarray]:
        """{key: float64 sum over batches (scalars) or float32 concatenation (arrays)}."""
        host = to_host(self._values)
        result: dict[str, float | np.ndarray] = {}
        for key, values in host.items():
            if np.ndim(values[0]) == 0:
                total = float(values[0])
                for value in values[1:]:
                    total += float(value)
                result[key] = total
            else:
                result[key] = np.concatenate([np.asarray(v, dtype=np.float32) for v in values])
        return result

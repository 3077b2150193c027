"""The trial clock: timed submission seconds versus untimed evaluation and logging seconds.

Timed seconds accumulate over *segments*: a segment opens when the harness hands control to the
submission (after initialisation, or after an evaluation ends) and closes when the harness is
about to evaluate. Every read of the clock that closes or opens a segment first waits for the
device (`sync`), so queued GPU work is charged to the side that queued it. An optional `segments`
observer (the contention monitor, `harness/contention.py`) is told when each timed segment opens
and closes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol


class SegmentObserver(Protocol):
    def open(self) -> None: ...
    def close(self) -> None: ...


class TrialClock:
    """Accumulates `submission`, `eval` and `logging` seconds and the total wall duration."""

    def __init__(self, sync: Callable[[], None], now: Callable[[], float] = time.perf_counter,
                 segments: SegmentObserver | None = None):
        self._sync = sync
        self._now = now
        self._segments = segments
        self._created = now()
        self._segment_start: float | None = None
        self.last_eval_end = self._created
        self.submission_time = 0.0
        self.eval_time = 0.0
        self.logging_time = 0.0
        self._earlier_duration = 0.0  # total_duration of the runs before a resume

    def start_timed(self) -> None:
        """Open a timed segment (after the device has caught up)."""
        self._sync()
        if self._segments is not None:
            self._segments.open()
        self._segment_start = self._now()

    def stop_timed(self) -> None:
        """Close the open timed segment and add its length to `submission_time`."""
        self._sync()
        assert self._segment_start is not None, "stop_timed() without start_timed()"
        self.submission_time += self._now() - self._segment_start
        self._segment_start = None
        if self._segments is not None:
            self._segments.close()

    def now(self) -> float:
        """The time source's reading, without a device sync."""
        return self._now()

    def seconds_since_last_eval(self) -> float:
        """Wall seconds since the last evaluation ended; no device sync (cheap, for cadence only)."""
        return self._now() - self.last_eval_end

    def timed_estimate(self) -> float:
        """Timed seconds so far including the open segment, without a device sync (for display)."""
        running = self._now() - self._segment_start if self._segment_start is not None else 0.0
        return self.submission_time + running

    @contextmanager
    def untimed(self, kind: str) -> Iterator[None]:
        """Charge the enclosed work to `eval_time` or `logging_time`."""
        self._sync()
        start = self._now()
        try:
            yield
        finally:
            self._sync()
            end = self._now()
            setattr(self, f"{kind}_time", getattr(self, f"{kind}_time") + end - start)
            if kind == "eval":
                self.last_eval_end = end

    def total_duration(self) -> float:
        return self._earlier_duration + self._now() - self._created

    def state(self) -> dict[str, float]:
        """The accumulated seconds, for a checkpoint."""
        return {"submission_time": self.submission_time, "eval_time": self.eval_time,
                "logging_time": self.logging_time, "total_duration": self.total_duration()}

    def restore(self, state: dict[str, float]) -> None:
        """Carry the seconds of an interrupted run over into this one (resume from a checkpoint)."""
        self.submission_time, self.eval_time = state["submission_time"], state["eval_time"]
        self.logging_time, self._earlier_duration = state["logging_time"], state["total_duration"]

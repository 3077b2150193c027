"""How much other processes used the trial's CPUs while its timed steps ran (psutil).

A *window* is a stretch of timed wall time, at most `WINDOW_SEC` long, inside one timed segment.
For each window, the other processes' CPU seconds on the CPUs this process may run on are

    others = Δ(busy seconds of those CPUs) − Δ(CPU seconds of this process and its live children)

where a CPU's busy seconds are its non-idle, non-iowait time (steal included: a hypervisor taking
the CPU slows the trial as any process would). A window is *busy* when `others / Δwall`, the
other processes' average use in cores, exceeds `busy_cores(cpus) = max(0.5, 0.1 × cpus)`: half a
core on a laptop (one busy process on two cores slows training by up to 2×), a tenth of the
CPUs on a large machine. The steps that end inside a busy window count as run while the machine
was busy, and a trial whose busy share of timed steps exceeds `CONTENDED_STEP_SHARE` is flagged
`contended`: its times measure the machine's load as much as the submission.
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple

import psutil

WINDOW_SEC = 1.0
CONTENDED_STEP_SHARE = 0.10


def busy_cores(cpus: int) -> float:
    """The other processes' average use, in cores, above which a window counts as busy."""
    return max(0.5, 0.1 * cpus)


class CpuReading(NamedTuple):
    """CPU seconds at one instant: busy seconds of this process's CPUs, and this process tree's own."""

    busy: float
    own: float


def _allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(psutil.cpu_count()))


def read_cpu(cpus: list[int] | None = None, process: psutil.Process | None = None) -> CpuReading:
    """Busy seconds summed over `cpus` (default: this process's CPUs) and the CPU seconds of
    `process` (default: this one) and its live descendants."""
    cpus = _allowed_cpus() if cpus is None else cpus
    per_cpu = psutil.cpu_times(percpu=True)
    busy = 0.0
    for index in cpus:
        if index < len(per_cpu):
            t = per_cpu[index]
            busy += sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    process = process or psutil.Process()
    own = 0.0
    for p in [process, *_children(process)]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        own += times.user + times.system
    return CpuReading(busy, own)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


class ContentionMonitor:
    """Accumulates, over a trial's timed segments, the other processes' CPU use and the steps run
    in busy windows. `open()`/`close()` bracket a timed segment; `step()` follows every step.

    `read` and `now` are the CPU and wall-clock sources (tests pass fake ones).
    """

    def __init__(self, read: Callable[[], CpuReading] | None = None, now: Callable[[], float] = time.perf_counter,
                 cpus: int | None = None) -> None:
        allowed = _allowed_cpus()
        self._read = read or (lambda: read_cpu(allowed))
        self._now = now
        self.cpus = cpus if cpus is not None else len(allowed)
        self.other_cpu_seconds = 0.0
        self.observed_seconds = 0.0
        self.observed_steps = 0
        self.busy_steps = 0
        self._window: tuple[float, CpuReading] | None = None
        self._window_steps = 0

    def open(self) -> None:
        """A timed segment starts: open a window."""
        self._window, self._window_steps = (self._now(), self._read()), 0

    def step(self) -> None:
        """One timed step ended; close the window (and open the next) once it is `WINDOW_SEC` long."""
        self._window_steps += 1
        if self._window is not None and self._now() - self._window[0] >= WINDOW_SEC:
            self._close_window()
            self.open()

    def close(self) -> None:
        """The timed segment ends: close its last window."""
        if self._window is not None:
            self._close_window()
            self._window = None

    def _close_window(self) -> None:
        start, first = self._window
        wall, last = self._now() - start, self._read()
        others = max(0.0, (last.busy - first.busy) - (last.own - first.own))
        self.other_cpu_seconds += others
        self.observed_seconds += wall
        self.observed_steps += self._window_steps
        if wall > 0 and others / wall > busy_cores(self.cpus):
            self.busy_steps += self._window_steps
        self._window_steps = 0

    @property
    def busy_step_share(self) -> float:
        return self.busy_steps / self.observed_steps if self.observed_steps else 0.0

    @property
    def contended(self) -> bool:
        return self.busy_step_share > CONTENDED_STEP_SHARE

    def summary(self) -> dict[str, float | int]:
        """What summary.json records (and a resumed trial continues from)."""
        mean = self.other_cpu_seconds / self.observed_seconds if self.observed_seconds else 0.0
        return {
            "other_cpu_seconds": round(self.other_cpu_seconds, 3),
            "observed_seconds": round(self.observed_seconds, 3),
            "other_cores_mean": round(mean, 3),
            "observed_steps": self.observed_steps,
            "busy_steps": self.busy_steps,
            "busy_step_share": round(self.busy_step_share, 4),
            "busy_cores_threshold": busy_cores(self.cpus),
            "contended_step_share": CONTENDED_STEP_SHARE,
        }

    def restore(self, summary: dict | None) -> None:
        """Continue the counts of an interrupted run (its `summary()`)."""
        if summary:
            self.other_cpu_seconds = float(summary["other_cpu_seconds"])
            self.observed_seconds = float(summary["observed_seconds"])
            self.observed_steps = int(summary["observed_steps"])
            self.busy_steps = int(summary["busy_steps"])


def busy_processes(interval: float = 1.0, limit: int = 5) -> tuple[float, list[str]]:
    """The other processes' use of this process's CPUs over `interval` seconds, in cores, and the
    busiest processes (`pid name: NN% CPU`), for a refusal message."""
    me = os.getpid()
    procs = []
    for p in psutil.process_iter(["pid", "name"]):
        if p.info["pid"] == me:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            continue
    first, start = read_cpu(), time.perf_counter()
    time.sleep(interval)
    last, wall = read_cpu(), time.perf_counter() - start
    cores = max(0.0, (last.busy - first.busy) - (last.own - first.own)) / wall
    usage = []
    for p in procs:
        try:
            usage.append((p.cpu_percent(None), p.info["pid"], p.info["name"]))
        except psutil.Error:
            continue
    top = [f"pid {pid} {name}: {pct:.0f}% CPU" for pct, pid, name in sorted(usage, reverse=True)[:limit] if pct >= 5]
    return cores, top

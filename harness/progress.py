"""A progress bar per trial: timed seconds against the budget, step, and the latest validation
metric against its target. On a terminal it is a tqdm bar; otherwise one line per evaluation."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from harness.clock import TrialClock

REFRESH_SEC = 0.5


class TrialProgress:
    def __init__(self, label: str, metric: str, target: float, budget_sec: float) -> None:
        self.metric, self.target, self.label = metric, target, label
        self.interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=round(budget_sec), desc=label, unit="s", disable=not self.interactive, leave=True,
            bar_format="{desc} |{bar}| {n:.0f}/{total:.0f} timed s {postfix}",
        )
        self._latest = "no evaluation yet"
        self._last_refresh = 0.0

    def _show(self, step: int, timed: float) -> None:
        self.bar.n = min(timed, self.bar.total)
        self.bar.set_postfix_str(f"step {step} | {self._latest}", refresh=False)
        self.bar.refresh()

    def on_step(self, global_step: int, clock: TrialClock) -> None:
        if not self.interactive:
            return
        now = time.perf_counter()
        if now - self._last_refresh >= REFRESH_SEC:
            self._last_refresh = now
            self._show(global_step, clock.timed_estimate())

    def on_eval(self, global_step: int, eval_row: dict, clock: TrialClock) -> None:
        value = eval_row.get(f"validation/{self.metric}", float("nan"))
        self._latest = f"validation {self.metric} {value:.4f} (target {self.target:g})"
        if self.interactive:
            self._show(global_step, clock.submission_time)
        else:
            print(
                f"{self.label}: step {global_step}, {clock.submission_time:.1f} timed s, {self._latest}",
                file=sys.stderr, flush=True,
            )

    def close(self) -> None:
        self.bar.close()


class SweepProgress:
    """Trials done / running / failed over a sweep, with an ETA; one line per finished trial off a terminal."""

    def __init__(self, total: int) -> None:
        self.total, self.started_at = total, time.monotonic()
        self.counts = {"done": 0, "failed": 0, "interrupted": 0, "locked": 0}
        self.running = 0
        self.interactive = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not self.interactive or total == 1)

    def _status(self) -> str:
        finished = sum(self.counts.values())
        eta = ""
        if finished and finished < self.total:
            remaining = (time.monotonic() - self.started_at) / finished * (self.total - finished)
            eta = f", ETA {remaining / 60:.1f} min"
        return (f"{self.counts['done']} done, {self.running} running, {self.counts['failed']} failed"
                + (f", {self.counts['interrupted']} interrupted" if self.counts["interrupted"] else "")
                + (f", {self.counts['locked']} locked by another process" if self.counts["locked"] else "") + eta)

    def on_start(self, label: str) -> None:
        self.running += 1
        self.bar.set_postfix_str(self._status())

    def on_end(self, label: str, outcome: str) -> None:
        self.running -= 1
        self.counts[outcome] += 1
        self.bar.update(1)
        self.bar.set_postfix_str(self._status())
        if not self.interactive and self.total > 1:
            print(f"[{sum(self.counts.values())}/{self.total}] {label}: {outcome} ({self._status()})",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()

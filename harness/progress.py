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

"""Helpers shared by the test modules (import as `from support import ...`; tests/ is on pythonpath)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOY_WORKLOAD = REPO / "tests" / "toy_workload"


class FakeTime:
    """A time source that advances only when told to: `sleep` stands in for work of known length."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class NullProgress:
    def on_step(self, global_step, clock) -> None: ...

    def on_eval(self, global_step, eval_row, clock) -> None: ...


def run_submit(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python submit.py ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, str(REPO / "submit.py"), *args], cwd=cwd, capture_output=True, text=True, env=env,
        timeout=600,
    )

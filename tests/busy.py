"""Synthetic load for the contention tests: processes that keep CPUs busy."""

from __future__ import annotations

import math
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from harness.contention import ContentionMonitor, busy_cores


@contextmanager
def busy_processes() -> Iterator[list[subprocess.Popen]]:
    """Enough spinning processes to exceed the busy threshold of this machine's CPUs twice over."""
    count = max(2, math.ceil(2 * busy_cores(ContentionMonitor().cpus)))
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

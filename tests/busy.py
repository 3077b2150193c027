"""Synthetic load for the contention tests: processes that keep CPUs busy."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from harness.contention import ContentionMonitor, busy_cores

_LAUNCH = (
    "import subprocess, sys\n"
    "procs = [subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True,"
    " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
    " for _ in range(int(sys.argv[1]))]\n"
    "print(' '.join(str(p.pid) for p in procs))\n"
)


@contextmanager
def busy_processes() -> Iterator[list[int]]:
    """The pids of enough spinning processes to exceed the busy threshold of this machine's CPUs
    twice over. They are started by a launcher that exits at once, so they are not descendants of
    the test's process (whose own process tree the contention monitor counts as the trial's)."""
    count = max(2, math.ceil(2 * busy_cores(ContentionMonitor().cpus)))
    launched = subprocess.run([sys.executable, "-c", _LAUNCH, str(count)], capture_output=True, text=True, check=True)
    pids = [int(pid) for pid in launched.stdout.split()]
    try:
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

"""The processes a trial starts, found and killed (Linux; psutil elsewhere).

A trial's worker is the subreaper of its descendants (`become_subreaper`), so that ones that
detach (double fork, `setsid`) stay findable as its descendants; `kill_descendants` kills them all
when the trial ends, and `kill_processes` is what the executor uses on a worker it stops. Every
process is stopped (SIGSTOP) before the tree is listed again, so none forks unseen, then killed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Iterable

import psutil

KILL_WAIT_SEC = 5.0  # how long to wait for killed processes to go
_PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value)


def become_subreaper() -> None:
    """Linux: adopt this process's orphaned descendants, so that detached ones stay its descendants."""
    if sys.platform.startswith("linux"):
        prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _signal_all(processes: Iterable[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)  # psutil refuses a PID that was reused meanwhile
        except psutil.Error:
            pass


def _with_descendants(processes: Iterable[psutil.Process]) -> set[psutil.Process]:
    """The live ones among `processes`, and all their descendants."""
    found = set()
    for process in processes:
        try:
            if process.is_running():
                found.add(process)
                found.update(process.children(recursive=True))
        except psutil.Error:
            pass
    return found


def kill_processes(processes: Iterable[psutil.Process]) -> set[psutil.Process]:
    """SIGKILL the processes and all their descendants; all are stopped first so none forks unseen.

    Returns the processes signalled. Does not wait for them."""
    tree = _with_descendants(processes)
    for _ in range(10):
        _signal_all(tree, signal.SIGSTOP)
        grown = _with_descendants(tree)
        if grown <= tree:
            break
        tree |= grown
    _signal_all(tree, signal.SIGKILL)
    return tree


def _reap_children() -> None:
    """Collect the exit status of every child of this process that has ended (no zombies left)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants() -> None:
    """SIGKILL every process this one started (adopted orphans included) and reap them."""
    me, deadline = psutil.Process(), time.monotonic() + KILL_WAIT_SEC
    while (descendants := me.children(recursive=True)) and time.monotonic() < deadline:
        kill_processes(descendants)
        time.sleep(0.02)
        _reap_children()

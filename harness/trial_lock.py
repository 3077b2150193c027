"""One process at a time per trial: an exclusive `flock` on `<trial_dir>/.lock` that names its holder.

* `held(trial_dir)` takes the lock for a `with` block, or raises `Locked` (saying who holds it)
  without having written anything. While it holds the lock it keeps in the lock file who it is:
  pid, host, start time and command line.
* `holder(trial_dir)` says who holds a trial's lock ("pid 123 on host h since 2026-11-30T16:20:00Z:
  python -m harness.worker ..."), or None when nobody does. It creates nothing and holds a shared
  lock only for the instant of its probe; `held` waits `PROBE_GRACE_SEC` for such probes to pass.

The kernel releases a flock when its holder dies, even by SIGKILL, so a lock is never stale: the
lock file's text outlives its holder, but only a live lock is reported. Processes forked by the
holder (multiprocessing, DataLoader workers) close their copy of the lock at once, so a leftover
child never keeps a dead trial locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".lock"
PROBE_GRACE_SEC = 0.5
_RETRY_SEC = 0.02
_held_fds: set[int] = set()


class Locked(Exception):
    """Another live process holds the trial's lock; `holder` says who."""

    def __init__(self, trial_dir: Path, holder: str) -> None:
        super().__init__(f"{trial_dir} is locked: another process runs this trial ({holder})")
        self.trial_dir, self.holder = Path(trial_dir), holder


def _close_held_in_child() -> None:
    for fd in _held_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _describe(text: str) -> str:
    """The lock file's text as one line: who holds (or last held) the lock."""
    try:
        who = json.loads(text)
        return f"pid {who['pid']} on host {who['host']} since {who['since']}: {who['command']}"
    except (ValueError, TypeError, KeyError):
        return "a process that has not yet said who it is"


def _identity() -> str:
    try:
        import psutil

        command = shlex.join(psutil.Process().cmdline())
    except Exception:  # noqa: BLE001 - the command line is only informative
        command = shlex.join([sys.executable, *sys.argv])
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command})


def _read(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode(errors="replace")


def _take(fd: int, path: Path) -> None:
    """Take the exclusive lock on `fd`, waiting only for momentary probes; raise `Locked` otherwise."""
    deadline = time.monotonic() + PROBE_GRACE_SEC
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Locked(path.parent, _describe(_read(fd))) from None
            time.sleep(_RETRY_SEC)


@contextmanager
def held(trial_dir: Path) -> Iterator[None]:
    """Hold `trial_dir`'s lock for the block; raise `Locked` at once when a live process holds it."""
    path = Path(trial_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _take(fd, path)
        _held_fds.add(fd)
        data = _identity().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        yield
    finally:
        _held_fds.discard(fd)
        os.close(fd)  # releases the lock


def recorded_holder(trial_dir: Path) -> str | None:
    """Who holds, or last held, the trial's lock, as the lock file says (no probe); None without one."""
    try:
        text = (Path(trial_dir) / LOCK_FILE).read_text(errors="replace")
    except OSError:
        return None
    return _describe(text)


def holder(trial_dir: Path) -> str | None:
    """Who holds the trial's lock now, or None when no live process does (or there is no lock file)."""
    try:
        fd = os.open(Path(trial_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # free; closing the file ends the probe
    except BlockingIOError:
        return _describe(_read(fd))
    finally:
        os.close(fd)

"""Build a directory so that readers never see a part of it: the data preparation steps' folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_directory(target: Path, is_current: Callable[[Path], bool]) -> Iterator[Path]:
    """A fresh temporary folder beside `target` to build in; when the block ends normally, the folder
    replaces `target`.

    An outdated or incomplete `target` is moved aside and deleted first, so a reader sees the old
    copy, none, or the new one whole. If `is_current(target)` holds when the block ends (a concurrent
    build finished first), or becomes true after a failed rename, that copy is kept. The temporary
    folder is removed whatever happens, so an exception inside the block leaves `target` as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".building"))
    try:
        building.chmod(0o755)  # mkdtemp makes it private
        yield building
        if is_current(target):
            return
        if target.exists():
            stale = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".stale")
            os.replace(target, stale)  # renaming a directory over an empty one is allowed
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(building, target)
        except OSError:
            if not is_current(target):
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)

"""A worker's output copied to its `log.txt` with a size cap: the head and the tail are kept.

A chatty submission can print without bound; the log keeps the first `head` bytes (written as they
come, so a running trial's log can be followed) and the last `tail` bytes (written when the output
ends), with one line in between saying how many bytes were cut. A log that a resumed trial
appends to counts its earlier bytes towards the head. Output that never comes creates no file.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import BinaryIO

HEAD_BYTES = 4 * 2**20
TAIL_BYTES = 4 * 2**20
JOIN_TIMEOUT_SEC = 5.0  # a grandchild that keeps the pipe open must not hang the supervisor


class CappedLog:
    """Copies everything read from `pipe` into `path` (appending), keeping its head and tail."""

    def __init__(self, path: Path, pipe: BinaryIO, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self.path, self._pipe, self._head, self._tail = Path(path), pipe, head, tail
        self._thread = threading.Thread(target=self._copy, name=f"log {path}", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        chunks = self._chunks()
        first = next(chunks, None)
        if first is None:  # no output: no log (a worker that found its trial locked must not touch it)
            return
        with open(self.path, "ab") as log:
            room = max(0, self._head - log.tell())
            tail, beyond_head = bytearray(), 0
            for chunk in itertools.chain([first], chunks):
                if room:
                    kept = chunk[:room]
                    log.write(kept)
                    log.flush()
                    room -= len(kept)
                    chunk = chunk[len(kept):]
                beyond_head += len(chunk)
                tail += chunk
                del tail[: max(0, len(tail) - self._tail)]
            if beyond_head > len(tail):
                log.write(f"\n[timetrial: {beyond_head - len(tail)} bytes of output cut here; this log keeps "
                          f"its first {self._head} and last {self._tail} bytes]\n".encode())
            log.write(tail)

    def _chunks(self):
        """What the pipe yields until it ends (or is closed under us after `close`'s timeout)."""
        try:
            while chunk := self._pipe.read1(65536):
                yield chunk
        except (OSError, ValueError):
            return

    def close(self) -> None:
        """Wait (briefly) until the output has ended and its tail is written."""
        self._thread.join(JOIN_TIMEOUT_SEC)

    def tail(self, chars: int) -> str:
        """The log's last `chars` characters once the output has ended ("(no output)" if there was none)."""
        self.close()
        return self.path.read_text(errors="replace")[-chars:] if self.path.exists() else "(no output)"

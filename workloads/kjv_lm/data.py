"""The King James Bible as text, from the SWORD module engKJV2006eb (Debian `sword-text-kjv`).

`mod2imp engKJV2006eb -s` (Debian `libsword-utils`) prints the module in SWORD's import format:
a `$$$<key>` line (`$$$Genesis 1:1`) followed by that entry's text lines. Keys with chapter or
verse 0, and bracketed keys (`$$$[ Module Heading ]`), hold headings, not verses, and are skipped.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from harness.errors import DataMissingError, UserInputError
from harness.records import atomic_write_text

MODULE = "engKJV2006eb"
EXPORT_NAME = f"{MODULE}.imp"
_VERSE_KEY = re.compile(r"^(?P<book>.+) (?P<chapter>\d+):(?P<verse>\d+)$")


def parse_imp(text: str, source: str = "imp text") -> list[tuple[str, int, int, str]]:
    """Verses as (book, chapter, verse, text), in module order; whitespace collapsed."""
    verses, key, lines = [], None, []

    def flush() -> None:
        match = _VERSE_KEY.match(key) if key else None
        body = " ".join(" ".join(lines).split())
        if match and int(match["chapter"]) > 0 and int(match["verse"]) > 0 and body:
            verses.append((match["book"], int(match["chapter"]), int(match["verse"]), body))

    for line in text.splitlines():
        if line.startswith("$$$"):
            flush()
            key, lines = line[3:].strip(), []
        else:
            lines.append(line)
    flush()
    if not verses:
        raise UserInputError(f"{source} holds no verses in SWORD imp format ($$$Book C:V lines)")
    return verses


def export_text(
    data_dir: Path, module: str = MODULE, folder: str = "kjv_lm", package: str = "sword-text-kjv"
) -> tuple[str, Path]:
    """A SWORD module's imp export: a local copy `data_dir/<folder>/<module>.imp`, else made with mod2imp
    and kept there. `package` is the Debian package that ships the module (named in the error)."""
    local = data_dir / folder / f"{module}.imp"
    if local.is_file():
        return local.read_text(encoding="utf-8"), local
    mod2imp = shutil.which("mod2imp")
    result = subprocess.run([mod2imp, module, "-s"], capture_output=True, text=True) if mod2imp else None
    if result is None or result.returncode != 0 or "$$$" not in result.stdout:
        why = "mod2imp is not installed" if result is None else f"mod2imp {module} printed no entries"
        raise DataMissingError(
            f"SWORD module {module} not found: {local} does not exist and {why}; install the Debian packages "
            f"{package} and libsword-utils, or save the output of `mod2imp {module} -s` to {local}"
        )
    atomic_write_text(local, result.stdout)
    return result.stdout, local


def load_verses(data_dir: Path) -> tuple[list[tuple[str, int, int, str]], str]:
    """The verses and a sha256 of the export they came from."""
    text, path = export_text(data_dir)
    return parse_imp(text, str(path)), hashlib.sha256(text.encode("utf-8")).hexdigest()

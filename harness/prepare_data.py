"""Prepare workloads' datasets ahead of a run: build them into --data_dir and print their content hashes.

    python -m harness.prepare_data --suite mini
    python -m harness.prepare_data --workload bible_translation,espeak_speech --data_dir /data
    python -m harness.prepare_data --workload wmt --data_dir /data --source_dir /copies/hf_wmt

A trial prepares its workload's data on first use anyway (untimed); this command does it once up
front, so that the first trial of a sweep does not wait, and shows the hash each run will record in
its meta.json. A missing source is one `error:` line saying what to install, and exit status 2.
Workloads whose sources are downloaded (AlgoPerf scale: `wmt`) define `prepare_dataset(source_dir)`,
which this command runs first; their trials only read what it built. `--source_dir` names a local
copy of those source files to use instead of the network.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.discovery import available_workloads, load_workload
from harness.errors import UserInputError

DEFAULT_DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"


def prepare(names: list[str], data_dir: Path, source_dir: Path | None = None) -> dict[str, str]:
    """Build (or find) each workload's data, from `source_dir` where given; returns workload name -> data hash."""
    workloads = {name: load_workload(name, "pytorch", data_dir) for name in names}
    if source_dir is not None:
        if without := [name for name, workload in workloads.items() if not hasattr(workload, "prepare_dataset")]:
            raise UserInputError(f"--source_dir is for workloads prepared from downloaded files; "
                                 f"{', '.join(without)} build their data from installed packages: drop --source_dir")
    hashes = {}
    for name, workload in workloads.items():
        start = time.perf_counter()
        if hasattr(workload, "prepare_dataset"):
            workload.prepare_dataset(source_dir=source_dir)
        workload.load_splits()
        hashes[name] = workload.data_hash()
        print(f"{name}: data hash {hashes[name]} ({time.perf_counter() - start:.1f} s)", flush=True)
    return hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--workload", help="workload names or folders, comma-separated")
    which.add_argument("--suite", choices=["mini"], help="every workload of the suite")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--source_dir", type=Path, default=None,
                        help="a local copy of a downloaded workload's source files (wmt), used instead of the network")
    args = parser.parse_args(argv)
    names = available_workloads("pytorch", suite=args.suite) if args.suite else args.workload.split(",")
    try:
        prepare([n.strip() for n in names if n.strip()], args.data_dir, args.source_dir)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

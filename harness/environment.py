"""What a run ran on: a hardware fingerprint, software versions and the git commit."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> int | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    except (ValueError, OSError, AttributeError):
        return None


def hardware(accelerator: dict) -> dict:
    """CPU, core count, memory and accelerator, plus `fingerprint`: a short hash of them all.

    Runs compare only when their fingerprints match (scoring refuses to mix them by default).
    """
    return fingerprinted({
        "cpu": _cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "machine": platform.machine(),
        **accelerator,
    })


def fingerprinted(info: dict) -> dict:
    """`info` (a `hardware` record, its fingerprint left out) with `fingerprint`: a short hash of the rest."""
    info = {key: value for key, value in info.items() if key != "fingerprint"}
    return {**info, "fingerprint": hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]}


def software(packages: tuple[str, ...] = ("torch", "numpy", "scipy", "jax", "jaxlib", "flax", "optax")) -> dict:
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(repo: Path) -> str | None:
    """HEAD's hash, with '-dirty' when the work tree has uncommitted changes; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def describe(framework: str, workload_refs: list[str], data_dir: str) -> dict:
    """This installation's code hash, software, and per workload the hardware a trial of it records."""
    from harness.code_identity import source_hash
    from harness.discovery import REPO_ROOT, load_workload

    hardware_by_workload = {ref: hardware(load_workload(ref, framework, data_dir).hardware()) for ref in workload_refs}
    return {"source_hash": source_hash(REPO_ROOT), "software": software(), "hardware": hardware_by_workload}


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.environment --framework F --workload a,b --data_dir D` prints `describe` as one
    JSON line: how a container describes itself to `harness/containers.py`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.environment", description=main.__doc__)
    parser.add_argument("--framework", default="pytorch")
    parser.add_argument("--workload", required=True, help="comma-separated workload names or folders")
    parser.add_argument("--data_dir", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(describe(args.framework, args.workload.split(","), args.data_dir), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

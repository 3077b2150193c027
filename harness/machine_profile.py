"""Machine profiles: this machine's reference seconds per step of the mini workloads, and the
budget scale they give.

A mini workload's documented budget (`max_allowed_runtime_sec`) and evaluation period were set on
the calibration machine, where the NAdamW baseline's timed step took
`calibration_seconds_per_step`. On another machine the budget and the period are scaled by

    scale = (this machine's reference seconds per step) / (the calibration machine's)

(three significant digits), so the baseline gets the same number of steps, and the same number
of evaluations, everywhere; targets never change. The reference seconds per step are measured by
`python -m harness.calibrate` (`harness/calibrate.py`) and kept in a profile, one JSON file per
machine (hardware fingerprint) and software (framework versions):

    <profile dir>/<fingerprint>-<software hash>.json
    {"id", "created", "hardware", "software",
     "workloads": {name: {"seconds_per_step", "measured", "block_seconds_per_step", ...}}}

The profile directory is `$TIMETRIAL_PROFILE_DIR`, by default `~/.cache/timetrial/profiles`.
A profile's `id` names one calibration: a workload measured later is added to it, but a new
`python -m harness.calibrate` starts a new profile (the old file is kept beside it, renamed by
its id), and scoring compares trials of one profile only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from harness import environment, spec
from harness.errors import UserInputError
from harness.records import write_json

PROFILE_DIR_VARIABLE = "TIMETRIAL_PROFILE_DIR"


def profile_dir() -> Path:
    return Path(os.environ.get(PROFILE_DIR_VARIABLE) or Path.home() / ".cache" / "timetrial" / "profiles")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def profile_path(hardware: dict, software: dict, directory: Path | None = None) -> Path:
    """The file of the current profile for this hardware and software."""
    return (directory or profile_dir()) / f"{hardware['fingerprint']}-{_digest(software)[:8]}.json"


def new_profile(hardware: dict, software: dict) -> dict:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"id": _digest([hardware, software, created])[:12], "created": created,
            "hardware": hardware, "software": software, "workloads": {}}


def load(path: Path) -> dict | None:
    """The profile at `path`, None if there is none; one clear error if it is not a profile."""
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserInputError(f"machine profile {path} is unreadable ({exc}); move it away or run "
                             "python -m harness.calibrate to measure this machine again") from None
    workloads = profile.get("workloads") if isinstance(profile, dict) else None
    valid = isinstance(workloads, dict) and isinstance(profile.get("id"), str) and all(
        isinstance(entry, dict) and _positive(entry.get("seconds_per_step")) for entry in workloads.values())
    if not valid:
        raise UserInputError(f"machine profile {path} is not a TimeTrial machine profile (no id, or a workload "
                             "without positive seconds_per_step); move it away or run python -m harness.calibrate")
    return profile


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def save(path: Path, profile: dict) -> None:
    write_json(path, profile)


def set_aside(path: Path) -> Path | None:
    """Keep the current profile at `path` under its id's name (a new calibration replaces it)."""
    old = load(path)
    if old is None:
        return None
    kept = path.with_name(f"{path.stem}.{old['id']}.json")
    path.replace(kept)
    return kept


@contextmanager
def locked(directory: Path | None = None) -> Iterator[None]:
    """One calibration at a time on this machine: an exclusive flock on `<profile dir>/.lock`
    (a second process waits, then finds what the first one measured)."""
    directory = directory or profile_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def calibrated(workload: spec.Workload) -> bool:
    """Whether the workload's budget scales with the machine (it has a calibration reference)."""
    return workload.calibration_seconds_per_step is not None


def scale(profile: dict, workload: spec.Workload) -> float:
    """This machine's reference seconds per step over the calibration machine's, 3 significant digits."""
    ratio = profile["workloads"][workload.name]["seconds_per_step"] / workload.calibration_seconds_per_step
    return float(f"{ratio:.3g}")


def trial_record(profile: dict, workload: spec.Workload) -> dict:
    """What a trial's meta.json keeps of the profile (`machine_profile`)."""
    return {
        "id": profile["id"],
        "created": profile["created"],
        "hardware_fingerprint": profile["hardware"]["fingerprint"],
        "software": profile["software"],
        "seconds_per_step": profile["workloads"][workload.name]["seconds_per_step"],
        "reference_seconds_per_step": workload.calibration_seconds_per_step,
    }


def machine(workload: spec.Workload) -> tuple[dict, dict]:
    """This machine's (hardware, software) as a trial of `workload` records them."""
    return environment.hardware(workload.hardware()), environment.software()

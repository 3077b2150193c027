"""Measure this machine: the NAdamW baseline's timed seconds per step on each mini workload.

    python -m harness.calibrate                          # every mini workload; a new profile
    python -m harness.calibrate --workload fashion_mnist,kjv_lm

The measurement is the harness's own trial loop (`run_trial`) with the `nadamw` submission under
its self-tuning defaults: after 10 warm-up steps, `BLOCKS` blocks of `BLOCK_STEPS` steps each are
timed (`harness/step_timing.py`: wall seconds of the trial loop, device synchronised at block
ends), and a workload's reference seconds per step is the median over blocks of the block's mean. The machine must otherwise be idle: the
calibration refuses to start while other processes use more than the contention threshold of its
CPUs, naming the busiest, and refuses to keep a measurement during which the machine became busy
(`harness/contention.py`). The result goes into this machine's profile (`harness/machine_profile.py`):
a run of this command starts a new profile; `submit.py` measures a workload missing from the
current profile once, before its first trial, and adds it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness import machine_profile, spec
from harness.contention import ContentionMonitor, busy_cores, busy_processes
from harness.discovery import available_workloads, load_submission, load_workload
from harness.errors import UserInputError
from harness.step_timing import time_harness_blocks, warmup_steps

BASELINE = "nadamw"
SEED = 0
BLOCKS = 15
BLOCK_STEPS = 10


def _refuse_if_busy(allow_busy: bool) -> None:
    cores, top = busy_processes()
    if cores > busy_cores(ContentionMonitor().cpus) and not allow_busy:
        raise UserInputError(
            f"calibration needs an otherwise idle machine, and other processes use {cores:.1f} cores of this "
            f"one ({'; '.join(top) or 'short-lived processes'}): stop them and run again, or give the budget "
            "scale yourself with submit.py --budget_scale"
        )


def measure(workload: spec.Workload, allow_busy: bool = False, blocks: int = BLOCKS,
            block_steps: int = BLOCK_STEPS) -> dict:
    """One workload's profile entry: the median over blocks of the baseline's timed seconds per step."""
    monitor = ContentionMonitor()
    block_seconds, _ = time_harness_blocks(workload, load_submission(BASELINE, "pytorch"), None, blocks, block_steps,
                                           contention=monitor)
    if monitor.contended and not allow_busy:
        _, top = busy_processes()
        raise UserInputError(
            f"the machine became busy while {workload.name} was calibrated (other processes used "
            f"{monitor.summary()['other_cores_mean']:.1f} cores on average; busiest now: {'; '.join(top) or 'none'}); "
            "nothing was kept: run again on an idle machine"
        )
    block_times = [seconds / block_steps for seconds in block_seconds]
    median = statistics.median(block_times)
    quartiles = statistics.quantiles(block_times, n=4) if len(block_times) > 1 else [median] * 3
    return {
        "seconds_per_step": round(median, 5),
        "relative_spread": round((quartiles[2] - quartiles[0]) / median, 4),  # interquartile range / median
        "block_seconds_per_step": [round(t, 5) for t in block_times],
        "block_steps": block_steps,
        "warmup_steps": warmup_steps(block_steps),
        "other_cores_mean": monitor.summary()["other_cores_mean"],
        "busy_allowed": allow_busy,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def reference_implementation(workload: spec.Workload) -> spec.Workload:
    """The PyTorch implementation of `workload`: the budget's reference steps are the PyTorch NAdamW
    baseline's, whatever framework a run then uses (the mini suite's budgets are per workload)."""
    return workload if workload.framework == "pytorch" else load_workload(workload.name, "pytorch", workload.data_dir)


def ensure(workloads: list[spec.Workload]) -> dict | None:
    """The current profile of this machine, with every calibrated workload of `workloads` in it:
    measured now (once, on an idle machine) for those the profile lacks; None if none is calibrated."""
    needed = [w for w in workloads if machine_profile.calibrated(w)]
    if not needed:
        return None
    hardware, software = machine_profile.machine(needed[0])
    path = machine_profile.profile_path(hardware, software)
    with machine_profile.locked(path.parent):
        profile = machine_profile.load(path) or machine_profile.new_profile(hardware, software)
        missing = [w for w in needed if w.name not in profile["workloads"]]
        if missing:
            _refuse_if_busy(allow_busy=False)
        for workload in missing:
            print(f"calibrating {workload.name} on this machine (once; its budget scales with the result) ...",
                  file=sys.stderr)
            profile["workloads"][workload.name] = measure(reference_implementation(workload))
            machine_profile.save(path, profile)
            _report(workload, profile)
    return profile


def _report(workload: spec.Workload, profile: dict) -> None:
    entry = profile["workloads"][workload.name]
    print(f"  {workload.name}: {entry['seconds_per_step'] * 1000:.1f} ms per step (calibration machine "
          f"{workload.calibration_seconds_per_step * 1000:.1f} ms): budget scale "
          f"{machine_profile.scale(profile, workload):g}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", help="comma-separated mini workloads (default: all of the mini suite)")
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    parser.add_argument("--allow_busy", action="store_true",
                        help="measure even on a busy machine (the profile says so); for tests and for machines "
                             "that are never idle")
    parser.add_argument("--ensure", action="store_true",
                        help="keep the current profile and measure only the workloads it lacks (as submit.py does); "
                             "the profile's path is printed last")
    args = parser.parse_args(argv)
    try:
        names = args.workload.split(",") if args.workload else available_workloads("pytorch", suite="mini")
        workloads = [load_workload(name, "pytorch", args.data_dir) for name in names]
        uncalibrated = [w.name for w in workloads if not machine_profile.calibrated(w)]
        if uncalibrated:
            raise UserInputError(f"{', '.join(uncalibrated)} has no calibration reference "
                                 "(calibration_seconds_per_step): only mini-suite workloads are calibrated")
        for workload in workloads:
            workload.data_hash()  # a missing dataset fails here, before anything is measured
        if args.ensure:
            ensure(workloads)
            print(machine_profile.profile_path(*machine_profile.machine(workloads[0])))
            return 0
        hardware, software = machine_profile.machine(workloads[0])
        path = machine_profile.profile_path(hardware, software)
        with machine_profile.locked(path.parent):
            _refuse_if_busy(args.allow_busy)
            profile = machine_profile.new_profile(hardware, software)
            for workload in workloads:
                print(f"calibrating {workload.name} ...", file=sys.stderr)
                profile["workloads"][workload.name] = measure(workload, args.allow_busy)
                _report(workload, profile)
            kept = machine_profile.set_aside(path)
            machine_profile.save(path, profile)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"machine profile {profile['id']}: {path}" + (f" (the previous one is kept as {kept})" if kept else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

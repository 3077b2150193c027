"""Run-to-run noise of time-to-target: the quick start's baseline over seeds, quiet and with a competing process.

    python benchmarks/timing_noise.py [--workload fashion_mnist] [--seeds 3] [--submit_args="--budget_scale 1.2"]
                                      [--experiment_dir DIR]

Every run is a real `submit.py` subprocess, the README's quick start with one seed:
`submit.py --workload W --submission nadamw --tuning_ruleset self --rng_seed s` for s = 0 .. seeds-1
(plus `--submit_args`, split as a shell would), in two conditions:

- quiet: nothing else is started (other users of the machine are not stopped: run it on an idle one);
- contended: one competing process, a pure-Python busy loop on one core, started before the run
  and killed after it.

The conditions alternate seed by seed (quiet 0, contended 0, quiet 1, ...), so slow drifts of the
machine hit both alike. Each trial's `summary.json` gives its status, time-to-target and
steps-to-target, and whether the harness flagged it `contended`. Printed per condition: each seed's
result; how many seeds reached the target; and among those, the mean and the coefficient of
variation (sample standard deviation / mean) of time-to-target and of steps-to-target (which needs
at least two seeds that reached it).

A mini workload is calibrated by `submit.py` before its first trial on a machine without a profile,
and calibration refuses a busy machine: run `python -m harness.calibrate` first, or pass the scale
with `--submit_args="--budget_scale X"`. Records go to a temporary directory unless
`--experiment_dir` keeps them (experiment names `<condition>_<seed>`).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.records import read_json  # noqa: E402

CONDITIONS = ("quiet", "contended")
BUSY_LOOP = "while True: pass"


def run_seed(workload: str, seed: int, condition: str, experiment_dir: Path, submit_args: list[str]) -> dict:
    """One quick-start trial as a `submit.py` subprocess; returns its summary's status, times and contended flag."""
    name = f"{condition}_{seed}"
    command = [sys.executable, str(REPO / "submit.py"), "--workload", workload, "--submission", "nadamw",
               "--tuning_ruleset", "self", "--rng_seed", str(seed), "--experiment_dir", str(experiment_dir),
               "--experiment_name", name, *submit_args]
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if condition == "contended" else None
    start = time.monotonic()
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if result.returncode == 2:  # a bad flag: every run would fail alike
        raise SystemExit(f"submit.py refused its flags ({shlex.join(command[1:])}):\n{result.stderr.strip()}")
    summaries = sorted((experiment_dir / name).rglob("summary.json"))
    summary = read_json(summaries[0]) if len(summaries) == 1 else {}
    return {
        "seed": seed, "wall": time.monotonic() - start, "status": summary.get("status", "failed"),
        "time_to_target": summary.get("time_to_target"), "steps_to_target": summary.get("steps_to_target"),
        "contended": summary.get("contended"),
        "error": None if summary else (result.stderr.strip().splitlines() or ["no summary.json"])[-1],
    }


def describe_run(run: dict) -> str:
    if run["error"]:
        return f"seed {run['seed']}: failed ({run['error']})"
    reached = (f"reached at {run['time_to_target']:.1f} timed s, step {run['steps_to_target']}"
               if run["time_to_target"] is not None else f"not reached ({run['status']})")
    flag = {True: ", flagged contended", False: ", not flagged", None: ""}[run["contended"]]
    return f"seed {run['seed']}: {reached}{flag} ({run['wall']:.0f} s wall)"


def mean_and_cv(values: list[float]) -> str:
    """'mean M, CV C' of at least two values."""
    mean = statistics.mean(values)
    return f"mean {mean:.4g}, CV {statistics.stdev(values) / mean:.3f}"


def summarise(condition: str, runs: list[dict]) -> list[str]:
    reached = [r for r in runs if r["time_to_target"] is not None]
    lines = [f"{condition}: {len(reached)} of {len(runs)} seeds reached the target"]
    lines += [f"  {describe_run(r)}" for r in runs]
    if len(reached) < 2:
        lines.append(f"  fewer than 2 seeds reached the target ({len(reached)}): no coefficient of variation")
    else:
        lines.append(f"  time-to-target (timed s): {mean_and_cv([r['time_to_target'] for r in reached])}")
        lines.append(f"  steps-to-target: {mean_and_cv([r['steps_to_target'] for r in reached])}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="fashion_mnist", help="a workload name or folder")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per condition: --rng_seed 0 .. seeds-1")
    parser.add_argument("--submit_args", default="",
                        help='more submit.py flags, e.g. --submit_args="--max_global_steps 100"')
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        help="comma-separated, of quiet,contended (default: both). On a 2-core CPU one busy process "
                             "slowed a 2-thread trial about 30x, so a contended run can take most of an hour")
    parser.add_argument("--experiment_dir", type=Path,
                        help="keep the run records here (default: a temporary directory)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    conditions = [c for c in args.conditions.split(",") if c]
    if not conditions or set(conditions) - set(CONDITIONS):
        parser.error(f"--conditions must name some of {', '.join(CONDITIONS)}, got {args.conditions!r}")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so the competitor is killed too
    workload = str(Path(args.workload).resolve()) if "/" in args.workload else args.workload
    submit_args = shlex.split(args.submit_args)
    runs: dict[str, list[dict]] = {condition: [] for condition in conditions}
    with tempfile.TemporaryDirectory() as tmp:
        experiment_dir = args.experiment_dir or Path(tmp)
        for seed in range(args.seeds):
            for condition in conditions:
                run = run_seed(workload, seed, condition, experiment_dir, submit_args)
                print(f"{condition} {describe_run(run)}", file=sys.stderr, flush=True)
                runs[condition].append(run)
    print(f"{args.workload}, nadamw, --tuning_ruleset self {shlex.join(submit_args)}".rstrip()
          + f", {args.seeds} seeds per condition; contended: one competing busy-loop process")
    for condition in conditions:
        print("\n".join(summarise(condition, runs[condition])))


if __name__ == "__main__":
    main()

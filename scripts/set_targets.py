"""Set a mini workload's targets and budget by AlgoPerf's procedure, and keep the evidence.

    python scripts/set_targets.py --workload fashion_mnist

1. Tune briefly: run the baseline (NAdamW) once for each listed search-space point (AlgoPerf's
   five-point space by default), with the targets switched off, on a schedule shortened to
   `--tuning_fraction` x `step_hint` steps (the step hint the schedule decays over is shortened
   with it); keep the point with the best final validation value.
2. Rerun that point over `--num_seeds` seeds for exactly `step_hint` steps. With `--keep_seeds`,
   full-length seed runs of the same point already in the evidence file are kept, not rerun.
3. Validation (test) target = over seeds, the `--rule` of the best validation (test) values:
   `median` (AlgoPerf's rule) or `worst` (the least good seed's best, so every seed reaches it),
   rounded to three significant digits towards the easier side.
4. Budget = 1.5 x (the latest step at which a seed first met the validation target) x (the
   fastest run's timed seconds per step, the run least slowed by other load on the machine), so
   the baseline reaches the target within about two thirds of the budget; rounded up to 10 s.
   `--seconds_per_step` replaces the second factor by a figure measured on a quiet machine.

The per-run evaluation rows and the proposed numbers go to `docs/targets/<workload>.json`;
`--from_evidence` recomputes the numbers from that file without training again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import search_space  # noqa: E402
from harness.discovery import REPO_ROOT, load_submission, load_workload  # noqa: E402
from harness.records import TrialRecord, write_json  # noqa: E402
from harness.trial import run_trial  # noqa: E402

BUDGET_FACTOR = 1.5


class _Quiet:
    def on_step(self, global_step, clock) -> None: ...

    def on_eval(self, global_step, eval_row, clock) -> None:
        print(f"  step {global_step}: {clock.submission_time:.1f} timed s", file=sys.stderr, flush=True)


def _round_easier(value: float, direction: str) -> float:
    """Round to three significant digits, up for lower-is-better metrics and down otherwise."""
    scale = 10 ** (math.floor(math.log10(abs(value))) - 2)
    return round((math.ceil if direction == "min" else math.floor)(value / scale) * scale, 12)


def _run(workload_name: str, data_dir: str, point: dict, seed: int, fraction: float = 1.0) -> list[dict]:
    """Eval rows of one baseline run of exactly `fraction` x step_hint steps (and a schedule over
    that many), targets off."""
    workload = load_workload(workload_name, "pytorch", data_dir)
    never = math.inf if workload.metric_direction == "max" else -math.inf
    workload.validation_target_value = workload.test_target_value = never
    workload.step_hint = max(1, round(fraction * workload.step_hint))
    with tempfile.TemporaryDirectory() as tmp:
        record = TrialRecord(Path(tmp))
        run_trial(workload, load_submission("nadamw", "pytorch"), point, seed, math.inf, record, _Quiet(),
                  max_global_steps=workload.step_hint)
        return record.eval_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    parser.add_argument("--points", default="1,2,3,4,5", help="1-based search-space points to tune over")
    parser.add_argument("--num_seeds", type=int, default=3)
    parser.add_argument("--tuning_fraction", type=float, default=0.25,
                        help="tuning runs last this fraction of step_hint (their schedule too)")
    parser.add_argument("--keep_seeds", action="store_true",
                        help="keep full-length seed runs of the chosen point from the existing evidence file")
    parser.add_argument("--rule", choices=["median", "worst"], default="median")
    parser.add_argument("--from_evidence", action="store_true", help="recompute from docs/targets/<workload>.json")
    parser.add_argument("--seconds_per_step", type=float, default=None,
                        help="timed seconds per step measured on a quiet machine (benchmarks/harness_overhead.py); "
                             "default: the fastest calibration run's")
    args = parser.parse_args()

    out = REPO_ROOT / "docs" / "targets" / f"{args.workload}.json"
    workload = load_workload(args.workload, "pytorch", args.data_dir)
    previous = json.loads(out.read_text()) if out.is_file() else None
    if args.from_evidence or args.keep_seeds:
        if previous is None:
            sys.exit(f"error: no evidence file {out}")
    if args.from_evidence:
        tuning, seeds = previous["tuning"], previous["seeds"]
    else:
        tuning, seeds = _train(workload, args, previous if args.keep_seeds else None)
    proposal = {**_propose(workload, seeds, args.rule, args.seconds_per_step), "chosen_point": _chosen(workload, tuning),
                "tuning_fraction": args.tuning_fraction if not args.from_evidence else previous.get("tuning_fraction"),
                "tuning": tuning, "seeds": seeds}
    write_json(out, proposal)
    print(json.dumps({k: v for k, v in proposal.items() if k not in ("tuning", "seeds")}, indent=2))
    print(f"evidence written to {out}")


def _chosen(workload, tuning: dict) -> int:
    best = min if workload.metric_direction == "min" else max
    return int(best(tuning, key=lambda i: tuning[i]["final_validation"]))


def _train(workload, args, previous: dict | None) -> tuple[dict, dict]:
    """Steps 1 and 2: brief tuning over the listed points, then the chosen point over seeds."""
    metric = workload.target_metric_name
    best = min if workload.metric_direction == "min" else max
    space = search_space.load(REPO_ROOT / "submissions" / "nadamw" / "search_space.json")
    tuning = {}
    for index in (int(i) for i in args.points.split(",")):
        print(f"tuning point {index}", file=sys.stderr)
        rows = _run(args.workload, args.data_dir, space[index - 1], seed=0, fraction=args.tuning_fraction)
        tuning[str(index)] = {"point": space[index - 1], "final_validation": rows[-1][f"validation/{metric}"],
                              "evals": rows}
    chosen = _chosen(workload, tuning)
    kept = {}
    if previous is not None and previous["chosen_point"] == chosen and previous["step_hint"] == workload.step_hint:
        kept = previous["seeds"]
    seeds = {}
    for seed in range(args.num_seeds):
        if str(seed) in kept:
            print(f"point {chosen}, seed {seed}: kept from {args.workload}.json", file=sys.stderr)
            seeds[str(seed)] = kept[str(seed)]
            continue
        print(f"point {chosen}, seed {seed}", file=sys.stderr)
        rows = _run(args.workload, args.data_dir, space[chosen - 1], seed)
        seeds[str(seed)] = {"best_validation": best(r[f"validation/{metric}"] for r in rows),
                            "best_test": best(r[f"test/{metric}"] for r in rows), "evals": rows}
    return tuning, seeds


def _propose(workload, seeds: dict, rule: str, seconds_per_step: float | None) -> dict:
    """Steps 3 and 4: targets and budget from the seeds' runs."""
    metric, direction = workload.target_metric_name, workload.metric_direction
    worst = max if direction == "min" else min
    combine = statistics.median if rule == "median" else worst
    validation = _round_easier(combine(s["best_validation"] for s in seeds.values()), direction)
    test = _round_easier(combine(s["best_test"] for s in seeds.values()), direction)
    steps_to_target = [
        next(r["global_step"] for r in s["evals"] if workload.meets_target(r[f"validation/{metric}"], validation))
        for s in seeds.values() if workload.meets_target(s["best_validation"], validation)
    ]
    seconds_per_step = seconds_per_step or min(
        s["evals"][-1]["accumulated_submission_time"] / s["evals"][-1]["global_step"] for s in seeds.values()
    )
    budget = math.ceil(BUDGET_FACTOR * max(steps_to_target) * seconds_per_step / 10) * 10
    return {
        "workload": workload.name, "metric": metric, "direction": direction, "rule": rule,
        "step_hint": workload.step_hint, "validation_target_value": validation, "test_target_value": test,
        "max_allowed_runtime_sec": budget, "steps_to_target_per_seed": steps_to_target,
        "seconds_per_step": seconds_per_step,
    }


if __name__ == "__main__":
    main()

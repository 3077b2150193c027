"""Set a mini workload's targets and budget by AlgoPerf's procedure, and keep the evidence.

    python scripts/set_targets.py --workload fashion_mnist

1. Tune briefly: run the baseline (NAdamW) once for each listed search-space point (AlgoPerf's
   five-point space by default), with the targets switched off, on a schedule shortened to
   `--tuning_fraction` x `step_hint` steps (the step hint the schedule decays over is shortened
   with it); keep the point with the best final validation value.
2. Rerun that point over `--num_seeds` seeds for exactly `step_hint` steps.
3. Validation (test) target = over seeds, the `--rule` of the best validation (test) values:
   `median` (AlgoPerf's rule) or `worst` (the least good seed's best, so every seed reaches it),
   rounded to three significant digits towards the easier side.
4. Budget = 1.5 x (the latest step at which a seed first met the validation target) x (the
   fastest run's timed seconds per step, the run least slowed by other load on the machine), so
   the baseline reaches the target within about two thirds of the budget; rounded up to 10 s.
   `--seconds_per_step` replaces the second factor by a figure measured on a quiet machine.

The per-run evaluation rows and the proposed numbers go to `docs/targets/<workload>.json`, rewritten
after every run; `--resume` keeps the runs already there (same data hash, step_hint, batch size and
tuning fraction) and does the rest; `--from_evidence` recomputes the numbers without training.
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
        outcome = run_trial(workload, load_submission("nadamw", "pytorch"), point, seed, math.inf, record, _Quiet(),
                            max_global_steps=workload.step_hint)
        if outcome.status == "failed":
            raise RuntimeError(f"the NAdamW run failed at step {outcome.global_step}:\n{outcome.error}")
        return record.eval_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    parser.add_argument("--points", default="1,2,3,4,5", help="1-based search-space points to tune over")
    parser.add_argument("--num_seeds", type=int, default=3)
    parser.add_argument("--tuning_fraction", type=float, default=0.25,
                        help="tuning runs last this fraction of step_hint (their schedule too)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the evidence file that match this calibration")
    parser.add_argument("--rule", choices=["median", "worst"], default="median")
    parser.add_argument("--from_evidence", action="store_true", help="recompute from docs/targets/<workload>.json")
    parser.add_argument("--seconds_per_step", type=float, default=None,
                        help="timed seconds per step measured on a quiet machine (benchmarks/harness_overhead.py); "
                             "default: the fastest calibration run's")
    args = parser.parse_args()

    out = REPO_ROOT / "docs" / "targets" / f"{args.workload}.json"
    workload = load_workload(args.workload, "pytorch", args.data_dir)
    previous = json.loads(out.read_text()) if out.is_file() else None
    if (args.from_evidence or args.resume) and previous is None:
        sys.exit(f"error: no evidence file {out}")
    if args.from_evidence:
        evidence = previous
    else:
        evidence = _train(workload, args, previous if args.resume else None, out)
    proposal = {**evidence, **_propose(workload, evidence["seeds"], args.rule, args.seconds_per_step)}
    write_json(out, proposal)
    print(json.dumps({k: v for k, v in proposal.items() if k not in ("tuning", "seeds")}, indent=2))
    print(f"evidence written to {out}")


def _chosen(workload, tuning: dict) -> int:
    best = min if workload.metric_direction == "min" else max
    return int(best(tuning, key=lambda i: tuning[i]["final_validation"]))


def _setting(workload, args) -> dict:
    """What runs must share to be kept by --resume: the data and the baseline's schedule and batch."""
    workload.load_splits()
    return {"data_hash": workload.data_hash(), "step_hint": workload.step_hint,
            "batch_size": workload.reference_batch_size, "tuning_fraction": args.tuning_fraction}


def _train(workload, args, previous: dict | None, out: Path) -> dict:
    """Steps 1 and 2: brief tuning over the listed points, then the chosen point over seeds. The
    evidence file is rewritten after every run (`complete: false` until the last), so an interrupted
    calibration goes on with --resume."""
    metric = workload.target_metric_name
    best = min if workload.metric_direction == "min" else max
    space = search_space.load(REPO_ROOT / "submissions" / "nadamw" / "search_space.json")
    setting = _setting(workload, args)
    reusable = previous is not None and all(previous.get(k) == v for k, v in setting.items())
    evidence = {"workload": workload.name, **setting, "complete": False,
                "tuning": dict(previous["tuning"]) if reusable else {}, "seeds": {}}
    for index in (int(i) for i in args.points.split(",")):
        if str(index) in evidence["tuning"]:
            print(f"tuning point {index}: kept from {out.name}", file=sys.stderr)
            continue
        print(f"tuning point {index}", file=sys.stderr)
        rows = _run(args.workload, args.data_dir, space[index - 1], seed=0, fraction=args.tuning_fraction)
        evidence["tuning"][str(index)] = {"point": space[index - 1], "final_validation": rows[-1][f"validation/{metric}"],
                                          "evals": rows}
        write_json(out, evidence)
    chosen = evidence["chosen_point"] = _chosen(workload, evidence["tuning"])
    kept = previous["seeds"] if reusable and previous.get("chosen_point") == chosen else {}
    for seed in range(args.num_seeds):
        if str(seed) in kept:
            print(f"point {chosen}, seed {seed}: kept from {out.name}", file=sys.stderr)
            evidence["seeds"][str(seed)] = kept[str(seed)]
            continue
        print(f"point {chosen}, seed {seed}", file=sys.stderr)
        rows = _run(args.workload, args.data_dir, space[chosen - 1], seed)
        evidence["seeds"][str(seed)] = {"best_validation": best(r[f"validation/{metric}"] for r in rows),
                                        "best_test": best(r[f"test/{metric}"] for r in rows), "evals": rows}
        write_json(out, evidence)
    evidence["complete"] = True
    return evidence


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
        "steps_to_target_cv": _cv(steps_to_target), "seconds_per_step": seconds_per_step,
    }


def _cv(values: list[float]) -> float | None:
    """The seeds' spread: sample standard deviation / mean (None with fewer than two values)."""
    return round(statistics.stdev(values) / statistics.mean(values), 3) if len(values) > 1 else None


if __name__ == "__main__":
    main()

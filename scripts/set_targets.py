"""Set a mini workload's targets and budget by AlgoPerf's procedure, and keep the evidence.

    python scripts/set_targets.py --workload fashion_mnist --points 1 --num_seeds 3

1. Tune briefly: run the baseline (NAdamW) once for each listed search-space point, for exactly
   `step_hint` steps with the targets switched off; keep the point with the best final validation.
2. Rerun that point over `--num_seeds` seeds, again for `step_hint` steps.
3. Validation (test) target = median over seeds of the best validation (test) value, rounded to
   three significant digits towards the easier side.
4. Budget = 1.5 x the latest timed second at which a seed first met the validation target, so the
   baseline reaches it within about two thirds of the budget (rounded up to 10 s).

The per-run evaluation rows and the proposed numbers go to `docs/targets/<workload>.json`.
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
    return (math.ceil if direction == "min" else math.floor)(value / scale) * scale


def _run(workload_name: str, data_dir: str, point: dict, seed: int) -> list[dict]:
    """Eval rows of one baseline run of exactly step_hint steps, targets off."""
    workload = load_workload(workload_name, "pytorch", data_dir)
    never = math.inf if workload.metric_direction == "max" else -math.inf
    workload.validation_target_value = workload.test_target_value = never
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
    args = parser.parse_args()

    workload = load_workload(args.workload, "pytorch", args.data_dir)
    metric, direction = workload.target_metric_name, workload.metric_direction
    best = min if direction == "min" else max
    space = search_space.load(REPO_ROOT / "submissions" / "nadamw" / "search_space.json")
    indices = [int(i) for i in args.points.split(",")]
    tuning = {}
    for index in indices:
        print(f"tuning point {index}", file=sys.stderr)
        rows = _run(args.workload, args.data_dir, space[index - 1], seed=0)
        tuning[index] = {"point": space[index - 1], "final_validation": rows[-1][f"validation/{metric}"], "evals": rows}
    chosen = best(tuning, key=lambda i: tuning[i]["final_validation"])
    seeds = {}
    for seed in range(args.num_seeds):
        print(f"point {chosen}, seed {seed}", file=sys.stderr)
        rows = tuning[chosen]["evals"] if seed == 0 else _run(args.workload, args.data_dir, space[chosen - 1], seed)
        seeds[seed] = {
            "best_validation": best(r[f"validation/{metric}"] for r in rows),
            "best_test": best(r[f"test/{metric}"] for r in rows),
            "evals": rows,
        }
    validation_target = _round_easier(statistics.median(s["best_validation"] for s in seeds.values()), direction)
    test_target = _round_easier(statistics.median(s["best_test"] for s in seeds.values()), direction)
    reach_times = [
        next(r["accumulated_submission_time"] for r in s["evals"]
             if workload.meets_target(r[f"validation/{metric}"], validation_target))
        for s in seeds.values() if workload.meets_target(s["best_validation"], validation_target)
    ]
    budget = math.ceil(BUDGET_FACTOR * max(reach_times) / 10) * 10
    proposal = {
        "workload": args.workload, "metric": metric, "direction": direction, "step_hint": workload.step_hint,
        "chosen_point": chosen, "validation_target_value": validation_target, "test_target_value": test_target,
        "max_allowed_runtime_sec": budget, "seconds_to_target_per_seed": reach_times,
        "tuning": tuning, "seeds": seeds,
    }
    out = REPO_ROOT / "docs" / "targets" / f"{args.workload}.json"
    write_json(out, proposal)
    summary = {k: v for k, v in proposal.items() if k not in ("tuning", "seeds")}
    print(json.dumps(summary, indent=2))
    print(f"evidence written to {out}")


if __name__ == "__main__":
    main()

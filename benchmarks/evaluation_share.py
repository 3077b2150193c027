"""Evaluation share of a default mini-suite trial, per workload: predicted from measured costs, or read from records.

    python benchmarks/evaluation_share.py [--workloads fashion_mnist,kjv_lm] [--tuning_ruleset external|self]
                                          [--budget_scale 1] [--eval_repeats 3] [--blocks 10] [--block_steps 10]
    python benchmarks/evaluation_share.py --from_records experiments/default

Predicted (the default), per workload (default: every mini workload):

- E, the cost of one evaluation: the median wall seconds of `--eval_repeats` calls of
  `workload.eval_model` (eval-train subset, validation and test) on a freshly initialised model,
  after one warm-up call. A trained model may evaluate faster or slower where evaluation decodes
  (translation, speech); `--from_records` measures real trials.
- s, seconds per training step: the median over `--blocks` blocks of `--block_steps` steps of the
  `nadamw` step (self-tuning defaults) timed inside `run_trial`, as the harness side of
  `harness/step_timing.py` times it, as calibration does.
- B and P, the timed budget and the evaluation period of a default trial (`budget_and_period`:
  the budget as `submit.py` plans it under `--tuning_ruleset`, both scaled by `--budget_scale`).
- N, the evaluations of a trial that runs its whole budget: N = 1 + floor(B / max(P, s)). The
  first follows step 1; the next is due once P seconds of wall time have passed since the previous
  one ended, and between evaluations a trial only trains (timed) and logs (untimed, small, ignored
  here), so evaluation k comes after about k * P timed seconds (but at most one per step); none is
  recorded once B is spent.
- share = N * E / (N * E + B); the goal is < 15 %. The time-to-target resolution is P timed seconds.

`--from_records DIR` reads every trial's `eval.jsonl` under DIR instead (its last row:
accumulated_eval_time / total_duration, where total_duration is wall time since the trial's
initialisation) and prints per workload the trials found, the pooled share (summed evaluation
seconds over summed durations), and the smallest and largest share of one trial.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.harness_overhead import SUBMISSION, shrink_evaluation  # noqa: E402
from harness.step_timing import time_harness_blocks  # noqa: E402
from benchmarks.timing import CLOCKS  # noqa: E402
from harness import spec  # noqa: E402
from harness.discovery import available_workloads, find_submission, load_submission, load_workload  # noqa: E402
from harness.experiment import Experiment  # noqa: E402
from harness.records import read_json, read_jsonl_prefix  # noqa: E402

GOAL = 0.15


def budget_and_period(workload: spec.Workload, ruleset: str, budget_scale: float) -> tuple[float, float]:
    """The timed budget and the evaluation period (seconds) of a default trial of `workload`, as `submit.py`
    plans them; the one place to change when budgets or periods are computed differently."""
    experiment = Experiment(
        workload=workload, workload_ref=workload.name, framework="pytorch",
        submission=find_submission(SUBMISSION, "pytorch"), ruleset=ruleset, space=None, num_trials=1, num_studies=1,
        root=Path("."), rng_seed=0, budget_scale=budget_scale,
    )
    return experiment.budget_sec, experiment.eval_period_sec


def evaluation_seconds(workload: spec.Workload, repeats: int) -> float:
    """Median wall seconds of `repeats` evaluations of a freshly initialised model, after one warm-up call."""
    params, model_state = workload.init_model_fn(0)
    data_dir = str(workload.data_dir)

    def evaluate() -> float:
        workload.sync()
        start = time.perf_counter()
        workload.eval_model(workload.eval_batch_size, params, model_state, 0, data_dir, None, 0)
        workload.sync()
        return time.perf_counter() - start

    evaluate()
    return statistics.median(evaluate() for _ in range(repeats))


def predict(name: str, args: argparse.Namespace) -> dict:
    workload = load_workload(name, "pytorch", args.data_dir)
    budget, period = budget_and_period(workload, args.tuning_ruleset, args.budget_scale)
    eval_sec = evaluation_seconds(workload, args.eval_repeats)
    shrink_evaluation(workload)  # the block timing's own two evaluations are untimed: keep them short
    submission = load_submission(SUBMISSION, "pytorch")
    blocks, _ = time_harness_blocks(workload, submission, None, args.blocks, args.block_steps, CLOCKS["wall"])
    step_sec = statistics.median(blocks) / args.block_steps
    evaluations = 1 + math.floor(budget / max(period, step_sec))
    share = evaluations * eval_sec / (evaluations * eval_sec + budget)
    return {"workload": name, "eval_sec": eval_sec, "step_sec": step_sec, "budget": budget, "period": period,
            "evaluations": evaluations, "share": share}


def print_predictions(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"default trials: nadamw, --tuning_ruleset {args.tuning_ruleset}, budget scale {args.budget_scale:g}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'workload':20} {'eval s':>7} {'ms/step':>8} {'budget s':>8} {'period s':>8} {'evals':>5} "
          f"{'eval s/trial':>12} {'share':>6}  goal < {GOAL:.0%}")
    for r in rows:
        print(f"{r['workload']:20} {r['eval_sec']:7.2f} {1e3 * r['step_sec']:8.1f} {r['budget']:8.1f} "
              f"{r['period']:8.1f} {r['evaluations']:5d} {r['evaluations'] * r['eval_sec']:12.1f} {r['share']:6.1%}  "
              f"{'meets' if r['share'] < GOAL else 'misses'}")
    print("evals = 1 + floor(budget / max(period, s/step)); share = evals x eval s / (evals x eval s + budget)")


def measured_shares(root: Path) -> dict[str, list[tuple[float, float]]]:
    """Per workload, (accumulated_eval_time, total_duration) of the last evaluation row of each trial under `root`."""
    shares: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(root.rglob("eval.jsonl")):
        rows = read_jsonl_prefix(path)
        if not rows or not rows[-1].get("total_duration"):
            continue
        workload = read_json(path.parent / "meta.json").get("workload") or path.parent.parent.parent.parent.name
        shares.setdefault(workload, []).append((rows[-1]["accumulated_eval_time"], rows[-1]["total_duration"]))
    return shares


def print_measured(shares: dict[str, list[tuple[float, float]]], root: Path) -> None:
    if not shares:
        print(f"no eval.jsonl with a total_duration under {root}")
        return
    print(f"{'workload':20} {'trials':>6} {'eval s':>8} {'wall s':>8} {'share':>6} {'min':>6} {'max':>6}"
          f"  goal < {GOAL:.0%}")
    for name, pairs in sorted(shares.items()):
        evals, durations = sum(e for e, _ in pairs), sum(d for _, d in pairs)
        each = [e / d for e, d in pairs]
        print(f"{name:20} {len(pairs):6d} {evals:8.1f} {durations:8.1f} {evals / durations:6.1%} {min(each):6.1%} "
              f"{max(each):6.1%}  {'meets' if evals / durations < GOAL else 'misses'}")
    print("share = accumulated_eval_time / total_duration at each trial's last evaluation (pooled over its trials)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=None, help="comma-separated (default: every mini workload)")
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    parser.add_argument("--tuning_ruleset", choices=("external", "self"), default="external",
                        help="the ruleset whose budget a default trial has (submit.py's default: external)")
    parser.add_argument("--budget_scale", type=float, default=1.0,
                        help="budget and period scale (1: the documented budgets of the calibration machine)")
    parser.add_argument("--eval_repeats", type=int, default=3, help="timed evaluations per workload")
    parser.add_argument("--blocks", type=int, default=10, help="blocks of training steps timed per workload")
    parser.add_argument("--block_steps", type=int, default=10, help="steps per block")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    parser.add_argument("--from_records", type=Path, metavar="DIR", help="measure the share in these run records")
    args = parser.parse_args()
    if args.from_records is not None:
        print_measured(measured_shares(args.from_records), args.from_records)
        return
    if args.eval_repeats < 1 or args.blocks < 1 or args.block_steps < 1 or not args.budget_scale > 0:
        parser.error("--eval_repeats, --blocks, --block_steps and --budget_scale must be positive")
    torch.set_num_threads(args.threads)
    names = args.workloads.split(",") if args.workloads else available_workloads("pytorch", suite="mini")
    print_predictions([predict(name, args) for name in names if name], args)


if __name__ == "__main__":
    main()

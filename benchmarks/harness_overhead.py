"""Harness overhead: timed seconds per step inside the harness versus a bare PyTorch loop.

    python benchmarks/harness_overhead.py [--workload fashion_mnist] [--steps 150] [--rounds 3]

Both sides train the same model from the same initial weights on the same batches (the workload's
input queue with the same seed) with the same optimizer and schedule (the `nadamw` submission).
The harness figure is (timed seconds at the last evaluation - at the first) / (steps - 1), which
leaves out step 1 (warm-up) on both sides; rounds alternate which side runs first, and the
median ratio is printed. Goal: <= 1.02.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from harness import search_space, spec  # noqa: E402
from harness.discovery import load_submission, load_workload  # noqa: E402
from harness.records import TrialRecord  # noqa: E402
from harness.trial import run_trial, trial_seeds  # noqa: E402

SEED = 0


class _Silent:
    def on_step(self, global_step, clock) -> None: ...

    def on_eval(self, global_step, eval_row, clock) -> None: ...


def bare_loop(workload, point: dict, steps: int) -> float:
    """Seconds per step of a plain loop: next batch, forward, loss, backward, step, schedule; the
    forward pass and loss are the workload's own `model_fn` and `loss_fn`, as inside the harness."""
    seeds = trial_seeds(SEED)
    from submissions.nadamw.torch import make_optimizer

    hp = spec.make_hyperparameters(point)
    queue = workload._build_input_queue(seeds["data"], "train", "", workload.reference_batch_size)
    model, _ = workload.init_model_fn(seeds["model"])
    optimizer, scheduler = make_optimizer(model, hp, workload)
    start = 0.0
    for step in range(steps):
        if step == 1:
            workload.sync()
            start = time.perf_counter()
        batch = next(queue)
        optimizer.zero_grad(set_to_none=True)
        logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, step, update_batch_norm=True)
        loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"), hp.label_smoothing)
        (loss["summed"] / loss["n_valid_examples"]).backward()
        optimizer.step()
        scheduler.step()
    workload.sync()
    return (time.perf_counter() - start) / (steps - 1)


def harness_loop(workload, point: dict, steps: int) -> float:
    """Timed seconds per step of the same training inside `run_trial`."""
    workload.eval_period_time_sec = math.inf  # evaluate after step 1 and at the last step only
    with tempfile.TemporaryDirectory() as tmp:
        record = TrialRecord(Path(tmp))
        submission = load_submission("nadamw", "pytorch")
        outcome = run_trial(workload, submission, point, SEED, math.inf, record, _Silent(), steps)
        if outcome.status == "failed":
            raise RuntimeError(f"the harness run failed at step {outcome.global_step}:\n{outcome.error}")
        first, last = record.eval_rows[0], record.eval_rows[-1]
    return (last["accumulated_submission_time"] - first["accumulated_submission_time"]) / (steps - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="fashion_mnist")
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    workload = load_workload(args.workload, "pytorch", args.data_dir)
    for attribute in ("num_eval_train_examples", "num_validation_examples", "num_test_examples"):
        setattr(workload, attribute, min(getattr(workload, attribute), 256))  # evaluation is untimed anyway
    point = search_space.load(Path(__file__).resolve().parent.parent / "submissions/nadamw/search_space.json")[0]
    ratios = []
    for round_index in range(args.rounds):
        if round_index % 2:  # alternate the order, so warm-up and drift favour neither side
            harness = harness_loop(workload, point, args.steps)
            bare = bare_loop(workload, point, args.steps)
        else:
            bare = bare_loop(workload, point, args.steps)
            harness = harness_loop(workload, point, args.steps)
        ratios.append(harness / bare)
        print(f"round {round_index + 1}: bare {bare * 1e3:.2f} ms/step, harness {harness * 1e3:.2f} ms/step, "
              f"ratio {harness / bare:.4f}", flush=True)
    print(f"{args.workload}, {args.steps} steps x {args.rounds} rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {workload.device}: "
          f"median harness/bare = {statistics.median(ratios):.4f} (goal <= 1.02)")


if __name__ == "__main__":
    main()

"""Harness overhead: the harness's timed step (through `run_trial`) versus a bare PyTorch or JAX loop.

    python benchmarks/harness_overhead.py [--framework pytorch|jax] [--workload fashion_mnist] [--blocks 40]
                                          [--block_steps 10] [--threads N] [--clock wall|cpu]

Both sides train their own copy of the same model, from the same initial weights, on the same
batches (the workload's input queue with the trial's data seed), with the same optimizer and
schedule (the `nadamw` submission at the first point of its search space), in ONE process,
interleaved in blocks of `--block_steps` steps:

- The harness side is a real `run_trial`, evaluating only after step 1 and after the last step.
  Its progress hook (`on_step`, which the trial loop calls after every step) marks a block
  boundary every `block_steps` steps, after a warm-up of max(2, block_steps) steps.
- At a boundary the hook reads the clock (ending the harness block), runs the bare blocks due
  there, each timed on its own, then reads the clock again (starting the next harness block). A
  harness block is thus exactly `block_steps` iterations of the trial loop (data selection,
  `update_params`, the divergence and contention checks, the progress call, the evaluation-due
  check) with no bare work inside it. The bare side warms up with as many steps at the first
  boundary, untimed.
- Blocks pair up in ABBA order, H0 B0 | B1 H1 | H2 B2 | B3 H3 ..., so the two blocks of a pair
  are adjacent in time and a slow drift favours the harness in one pair and the bare loop in the
  next. Each pair gives one ratio harness/bare.

Printed: each side's median milliseconds per step, the median pair ratio with a 95% bootstrap
interval, and the verdict against the goal (<= 1.02): it meets the goal only when the whole
interval is at or below 1.02 (`benchmarks/timing.py`). A median leaves out work done in fewer than
half of the blocks (the harness reads other processes' CPU use once a second): the ratio of the
summed block times, printed too, includes it (and any outlier). Last, both final models are
evaluated: equal validation losses show that the two sides did the same training.

With `--framework jax` the bare side is a plain loop around the same jitted step that the short form
compiles (`harness/backends/jax/short_form.train_step`): next batch, the step, nothing else.

Before reading the clock both sides wait for the device (`workload.sync` for the harness, the bare
loop's own parameters with `jax.block_until_ready` for the bare JAX loop). `--clock wall` (the
default) is the trial clock's own time source, with torch on all cores as a trial runs; on a CPU
shared with other work, `--clock cpu --threads 1` counts this process's CPU seconds instead, so
time lost to other processes drops out (with one thread it equals wall time on an idle machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.timing import CLOCKS, median_interval, verdict  # noqa: E402
from harness import search_space, spec  # noqa: E402
from harness.discovery import Submission, load_submission, load_workload  # noqa: E402
from harness.step_timing import SEED, time_harness_blocks, warmup_steps  # noqa: E402
from harness.trial import trial_seeds  # noqa: E402

GOAL = 1.02
SUBMISSION = "nadamw"
EVAL_EXAMPLES = 256  # evaluation is untimed; fewer examples only save wall time


class BareLoop:
    """A plain PyTorch loop: next batch, zero_grad, forward (the workload's `model_fn`), loss (its
    `loss_fn`), backward, optimizer step, schedule step; the model, batches and optimizer are built
    as the harness's trial with seed `SEED` builds them."""

    def __init__(self, workload: spec.Workload, submission: Submission, point: dict) -> None:
        seeds = trial_seeds(SEED)
        self.workload, self.hyperparameters = workload, spec.make_hyperparameters(point)
        self.queue = workload._build_input_queue(seeds["data"], "train", str(workload.data_dir),
                                                 submission.batch_size(workload)[0])
        self.model, self.model_state = workload.init_model_fn(seeds["model"])
        self.step, self.seed = 0, seeds["step"]
        self.build_optimizer()

    def build_optimizer(self) -> None:
        from submissions.nadamw.torch import make_optimizer

        self.optimizer, self.scheduler = make_optimizer(self.model, self.hyperparameters, self.workload)

    def run(self, steps: int) -> None:
        workload, hp = self.workload, self.hyperparameters
        for _ in range(steps):
            batch = next(self.queue)
            self.optimizer.zero_grad(set_to_none=True)
            logits, self.model_state = workload.model_fn(
                self.model, batch, self.model_state, spec.ForwardPassMode.TRAIN, self.step, update_batch_norm=True,
                dropout_rate=getattr(hp, "dropout_rate", None),
            )
            loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"), getattr(hp, "label_smoothing", 0.0))
            (loss["summed"] / loss["n_valid_examples"]).backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1

    def sync(self) -> None:
        self.workload.sync()

    def validation_loss(self) -> float:
        results = self.workload.eval_model(self.workload.eval_batch_size, self.model, self.model_state, 0,
                                           str(self.workload.data_dir), None, self.step)
        return results["validation/loss"]


class BareJaxLoop(BareLoop):
    """A plain JAX loop: next batch, the jitted step of the short form (forward, loss, gradient, the
    optax update), with the model, batches and optimizer built as the harness's trial builds them."""

    def build_optimizer(self) -> None:
        import jax

        from harness.backends.jax.short_form import train_step
        from submissions.nadamw.jax import make_optimizer

        transformation = make_optimizer(self.model, self.hyperparameters, self.workload)
        self.optimizer_state = jax.device_put(transformation.init(self.model), self.workload.device)
        self.train_step = jax.jit(train_step(self.workload, transformation, self.hyperparameters))

    def run(self, steps: int) -> None:
        from harness.backends.jax.workload import rng_key

        for _ in range(steps):
            batch = next(self.queue)
            self.model, self.model_state, self.optimizer_state, _, _ = self.train_step(
                self.model, self.model_state, self.optimizer_state, batch, rng_key(self.seed + self.step))
            self.step += 1

    def sync(self) -> None:
        import jax

        jax.block_until_ready((self.model, self.model_state, self.optimizer_state))


def abba_schedule(blocks: int) -> list[list[int]]:
    """For each boundary j = 0..blocks, the bare blocks run there. Pair k is (harness k, bare k), harness
    first when k is even and bare first when k is odd: H0 B0 | B1 H1 | H2 B2 | B3 H3 ..."""
    return [[b for b in (j - 1, j) if 0 <= b < blocks and (b % 2 == 0) == (b == j - 1)] for j in range(blocks + 1)]


def shrink_evaluation(workload: spec.Workload, examples: int = EVAL_EXAMPLES) -> None:
    """Evaluate on at most `examples` examples per split (untimed work; this only saves wall time)."""
    for attribute in ("num_eval_train_examples", "num_validation_examples", "num_test_examples"):
        setattr(workload, attribute, min(getattr(workload, attribute), examples))


def measure(workload: spec.Workload, blocks: int, block_steps: int, clock_name: str) -> dict:
    """Interleave the two sides; returns per-block seconds of each, the pair ratios and both final losses."""
    if blocks < 2 or block_steps < 1:
        raise ValueError(f"need at least 2 blocks of at least 1 step, got --blocks {blocks} "
                         f"--block_steps {block_steps}")
    clock = CLOCKS[clock_name]
    submission = load_submission(SUBMISSION, workload.framework)
    point = search_space.load(submission.search_space_path)[0]
    bare = (BareLoop if workload.framework == "pytorch" else BareJaxLoop)(workload, submission, point)
    bare_seconds = [float("nan")] * blocks
    schedule = abba_schedule(blocks)

    def between(boundary: int) -> None:
        if boundary == 0:
            bare.run(warmup_steps(block_steps))
        for b in schedule[boundary]:
            bare.sync()
            start = clock()
            bare.run(block_steps)
            bare.sync()
            bare_seconds[b] = clock() - start

    harness_seconds, last_row = time_harness_blocks(workload, submission, point, blocks, block_steps, clock, between)
    return {
        "harness": harness_seconds, "bare": bare_seconds,
        "ratios": [h / b for h, b in zip(harness_seconds, bare_seconds)],
        "harness_loss": last_row["validation/loss"], "bare_loss": bare.validation_loss(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", choices=("pytorch", "jax"), default="pytorch")
    parser.add_argument("--workload", default="fashion_mnist")
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    parser.add_argument("--blocks", type=int, default=40, help="blocks per side (= block pairs)")
    parser.add_argument("--block_steps", type=int, default=10, help="steps per block")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: the trial clock's time source; cpu: this process's CPU time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    workload = load_workload(args.workload, args.framework, args.data_dir)
    shrink_evaluation(workload)
    result = measure(workload, args.blocks, args.block_steps, args.clock)
    interval = median_interval(result["ratios"])
    ratios = np.asarray(result["ratios"])
    per_step = {side: 1e3 * float(np.median(result[side])) / args.block_steps for side in ("harness", "bare")}
    same = "the same" if result["harness_loss"] == result["bare_loss"] else "DIFFERENT"
    engine = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    if args.framework == "jax":
        import jax

        engine = f"jax {jax.__version__}"
    print(f"{args.workload} ({args.framework}), {SUBMISSION}, {args.blocks} pairs of {args.block_steps}-step blocks "
          f"(ABBA order), {engine}, device {workload.device}, {args.clock} clock")
    print(f"per step (median over blocks): harness {per_step['harness']:.2f} ms, bare {per_step['bare']:.2f} ms")
    print("pair ratios: min {:.3f}, quartiles {:.3f} {:.3f} {:.3f}, max {:.3f}".format(
        ratios.min(), *np.quantile(ratios, [0.25, 0.5, 0.75]), ratios.max()))
    print(f"harness/bare: median {interval}; goal <= {GOAL}: {verdict(interval, GOAL)}")
    print(f"harness/bare of the summed block times: {sum(result['harness']) / sum(result['bare']):.4f}")
    print(f"final validation loss: harness {result['harness_loss']:.6g}, bare {result['bare_loss']:.6g} "
          f"({same} training on both sides)")


if __name__ == "__main__":
    main()

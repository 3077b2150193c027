"""Step time of each submission relative to AdamW on the same workload, and its peak memory.

    python benchmarks/submission_step_time.py [--workloads fashion_mnist,kjv_lm] [--submissions sophia_g,adahessian]
                                              [--blocks 30] [--block_steps 10] [--threads 1] [--clock cpu|wall]
                                              [--no-memory]

Time: one process. On each workload every submission (AdamW always included) gets its own model from
the same initial weights, its optimizer state and an input queue with the same seed, exactly as the
harness builds them (hyperparameters: the first point drawn from its search space, with dropout and label
smoothing set to 0 for all), and one untimed warm-up step. Then `blocks` rounds each run one block of
`block_steps` steps of every submission in turn, in forward order in even rounds and reversed order in
odd ones, so that slow drifts of a shared machine hit all submissions alike and favour none. A step is
`data_selection` + `update_params`. Each round gives each submission one ratio: its block time over
AdamW's block time in the same round. Printed per submission: the median block time per step, the median
ratio with a 95% bootstrap interval, and, where issue 6 set a goal, the verdict (`benchmarks/timing.py`):
"meets the goal" only if the whole interval is at or below the goal, "misses the goal" if all of it is
above, "inconclusive" when it straddles the goal.

Clock: on CUDA, wall time with the device synchronised (`--clock wall`, the default there). On CPU the
default is this process's CPU time with torch on `--threads` threads (default 1): other users of a
shared CPU then barely move the figures, which wall time on two contended cores does by 2-5x. With the
default 10 steps a block holds exactly one of the every-10-steps refreshes of Sophia-G, Sophia-H and
SOAP; keep `--block_steps` a multiple of 10, or the median ratio leaves refreshes out.
`prepare_for_eval` (timed by the harness, but once per evaluation, not per step) is reported separately.

Memory: on CUDA, `torch.cuda.max_memory_allocated` over the same steps. On CPU, each (workload,
submission) runs in a child process: the peak resident memory (VmHWM, reset through
/proc/self/clear_refs) over warm-up, 10 steps and one `prepare_for_eval`, above the resident memory
just before the first step — the memory training adds to the loaded model and data.

Goals (issue 6): Sophia-G <= 1.10x, schedule-free <= 1.05x, AdaHessian <= 2.5x AdamW.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.timing import CLOCKS, median_interval, verdict  # noqa: E402
from harness import search_space, spec  # noqa: E402
from harness.discovery import available_submissions, available_workloads, load_submission, load_workload  # noqa: E402
from harness.trial import trial_seeds  # noqa: E402

SEED = 0
BASELINE = "adamw"
DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"
MEMORY_STEPS = 10
SAME_FOR_ALL = ("dropout_rate", "label_smoothing")  # regularisers set to 0 so every submission does the same work
GOALS = {"sophia_g": 1.10, "schedule_free_adamw": 1.05, "schedule_free_sgd": 1.05, "adahessian": 2.5}
DEFAULT_CLOCK = "wall" if torch.cuda.is_available() else "cpu"


class Trial:
    """One submission's training state on a workload, built as the harness's trial loop builds it."""

    def __init__(self, workload: spec.Workload, name: str, clock: Callable[[], float] = CLOCKS[DEFAULT_CLOCK]) -> None:
        self.clock = clock
        self.workload, self.submission = workload, load_submission(name, "pytorch")
        seeds = trial_seeds(SEED)
        point = search_space.draw(search_space.load(self.submission.search_space_path), 1, seed=SEED)[0]
        self.hyperparameters = spec.make_hyperparameters({**point, **{k: 0.0 for k in SAME_FOR_ALL if k in point}})
        self.queue = workload._build_input_queue(seeds["data"], "train", "", self.submission.batch_size(workload)[0])
        self.model, self.model_state = workload.init_model_fn(seeds["model"])
        self.optimizer_state = self.submission.init_optimizer_state(
            workload, self.model, self.model_state, self.hyperparameters, seeds["optimizer"]
        )
        self.step, self.step_seed = 0, seeds["step"]

    def train(self, steps: int) -> float:
        """Run `steps` steps; returns their mean time in seconds of `clock`."""
        self.workload.sync()
        start = self.clock()
        for _ in range(steps):
            rng = self.step_seed + self.step
            batch = self.submission.data_selection(
                self.workload, self.queue, self.optimizer_state, self.model, self.model_state, self.hyperparameters,
                self.step, rng,
            )
            self.optimizer_state, self.model, self.model_state = self.submission.update_params(
                self.workload, self.model, self.workload.model_params_types, self.model_state, self.hyperparameters,
                batch, self.workload.loss_type, self.optimizer_state, [], self.step, rng,
            )
            self.step += 1
        self.workload.sync()
        return (self.clock() - start) / steps

    def prepare_for_eval(self) -> float:
        """Seconds of one `prepare_for_eval` call (0 for submissions without one)."""
        if self.submission.prepare_for_eval is None:
            return 0.0
        self.workload.sync()
        start = self.clock()
        self.optimizer_state, self.model, self.model_state = self.submission.prepare_for_eval(
            self.workload, self.model, self.workload.model_params_types, self.model_state, self.hyperparameters,
            self.workload.loss_type, self.optimizer_state, [], self.step, self.step_seed + self.step,
        )
        self.workload.sync()
        return self.clock() - start


def resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(workload_name: str, submission: str) -> None:
    """In a child process: print the peak memory (MiB) that training adds, as JSON."""
    workload = load_workload(workload_name, "pytorch", DATA_DIR)
    trial = Trial(workload, submission)
    if workload.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
        before = resident_kib("VmRSS") * 1024
    trial.train(MEMORY_STEPS)
    trial.prepare_for_eval()
    peak = torch.cuda.max_memory_allocated() if workload.device.type == "cuda" else resident_kib("VmHWM") * 1024
    print(json.dumps({"peak_mib": (peak - before) / 2**20}))


def peak_memory_mib(workload_name: str, submission: str) -> float:
    result = subprocess.run(
        [sys.executable, __file__, "--memory-child", workload_name, submission, "--threads", str(torch.get_num_threads())],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {submission} on {workload_name} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def interleaved_block_times(trials: dict[str, Trial], blocks: int, block_steps: int) -> dict[str, list[float]]:
    """Mean step seconds of each block of each trial: `blocks` rounds, one block of every trial per round,
    in forward order in even rounds and reversed order in odd ones."""
    times: dict[str, list[float]] = {name: [] for name in trials}
    names = list(trials)
    for block in range(blocks):
        for name in names if block % 2 == 0 else names[::-1]:
            times[name].append(trials[name].train(block_steps))
    return times


def benchmark(workload_name: str, submissions: list[str], blocks: int, block_steps: int, memory: bool,
              clock_name: str = DEFAULT_CLOCK) -> list[dict]:
    workload = load_workload(workload_name, "pytorch", DATA_DIR)
    workload.data_hash()
    trials = {name: Trial(workload, name, CLOCKS[clock_name]) for name in submissions}
    for trial in trials.values():
        trial.train(1)
    times = interleaved_block_times(trials, blocks, block_steps)
    rows = []
    for name in submissions:
        goal = GOALS.get(name)
        interval = None
        if name != BASELINE:
            interval = median_interval([t / a for t, a in zip(times[name], times[BASELINE])])
        rows.append({
            "workload": workload_name, "submission": name, "step_ms": 1000 * statistics.median(times[name]),
            "interval": interval, "goal": goal,
            "verdict": verdict(interval, goal) if interval is not None and goal is not None else None,
            "prepare_for_eval_ms": 1000 * trials[name].prepare_for_eval(),
            "peak_mib": peak_memory_mib(workload_name, name) if memory else None,
        })
    return rows


def print_table(rows: list[dict], clock_name: str) -> None:
    unit = f"{clock_name} ms"
    print(f"{'workload':14} {'submission':20} {unit:>8} {'x AdamW':>8} {'95% interval':>15} {'goal':>6}"
          f" {'eval-prep ms':>12} {'peak MiB':>9}  verdict")
    for r in rows:
        interval = r["interval"]
        ratio = f"{interval.median:8.3f}" if interval else f"{1:8.3f}"
        spread = f"{interval.low:7.3f}-{interval.high:<7.3f}" if interval else f"{'-':>15}"
        goal = f"{r['goal']:.2f}" if r["goal"] else ""
        peak = f"{r['peak_mib']:9.1f}" if r["peak_mib"] is not None else f"{'-':>9}"
        print(f"{r['workload']:14} {r['submission']:20} {r['step_ms']:8.1f} {ratio} {spread:>15} {goal:>6}"
              f" {r['prepare_for_eval_ms']:12.1f} {peak}  {r['verdict'] or ''}".rstrip())
    pairs = next((r["interval"].count for r in rows if r["interval"]), 0)
    print(f"ms: median over blocks of the mean step time; x AdamW: median over {pairs} rounds of the block-time "
          "ratio to AdamW in the same round, with its bootstrap interval")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(available_workloads("pytorch", suite="mini")))
    parser.add_argument("--submissions", default=",".join(available_submissions("pytorch")))
    parser.add_argument("--blocks", type=int, default=30, help="rounds, each one block of every submission")
    parser.add_argument("--block_steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=DEFAULT_CLOCK,
                        help="wall time (default on CUDA) or this process's CPU time (default on CPU)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory children")
    parser.add_argument("--memory-child", nargs=2, metavar=("WORKLOAD", "SUBMISSION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    submissions = [BASELINE] + [s for s in args.submissions.split(",") if s and s != BASELINE]
    if args.blocks < 2 or args.block_steps < 1:
        parser.error(f"need at least 2 blocks of at least 1 step, got --blocks {args.blocks} "
                     f"--block_steps {args.block_steps}")
    rows = [row for w in args.workloads.split(",")
            for row in benchmark(w, submissions, args.blocks, args.block_steps, args.memory, args.clock)]
    print_table(rows, args.clock)


if __name__ == "__main__":
    main()

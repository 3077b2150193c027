"""Step time of each submission relative to AdamW on the same workload, and its peak memory.

    python benchmarks/submission_step_time.py [--workloads fashion_mnist,kjv_lm] [--submissions sophia_g,adahessian]
                                              [--steps 10] [--rounds 3] [--no-memory]

Time: one process. On each workload every submission (AdamW always included) gets its own model from
the same initial weights, its optimizer state and an input queue with the same seed, exactly as the
harness builds them (hyperparameters: the first point drawn from its search space, with dropout and label
smoothing set to 0 for all), and one untimed warm-up step. Then `rounds` rounds each run `steps` steps of every
submission in turn, so a shared machine's slow drifts hit all of them alike. A step is
`data_selection` + `update_params`; a submission's step time is the median over rounds of its mean step
time, and its ratio is that over AdamW's. On CUDA the clock is wall time with the device synchronised.
On CPU it is this process's CPU time with torch on `--threads` threads (default 1): other users of a
shared CPU then barely move the figures, which wall time on two contended cores does by 2-5x. With the default 10
steps a round holds exactly one of Sophia's every-10-steps curvature refreshes. `prepare_for_eval`
(timed by the harness, but once per evaluation, not per step) is reported separately.

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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from harness import search_space, spec  # noqa: E402
from harness.discovery import available_submissions, available_workloads, load_submission, load_workload  # noqa: E402
from harness.trial import trial_seeds  # noqa: E402

SEED = 0
BASELINE = "adamw"
DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"
MEMORY_STEPS = 10
SAME_FOR_ALL = ("dropout_rate", "label_smoothing")  # regularisers set to 0 so every submission does the same work
GOALS = {"sophia_g": 1.10, "schedule_free_adamw": 1.05, "schedule_free_sgd": 1.05, "adahessian": 2.5}


class Trial:
    """One submission's training state on a workload, built as the harness's trial loop builds it."""

    def __init__(self, workload: spec.Workload, name: str) -> None:
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
        """Run `steps` steps; returns their mean time in seconds (see `clock`)."""
        self.workload.sync()
        start = clock()
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
        return (clock() - start) / steps

    def prepare_for_eval(self) -> float:
        """Seconds of one `prepare_for_eval` call (0 for submissions without one)."""
        if self.submission.prepare_for_eval is None:
            return 0.0
        self.workload.sync()
        start = clock()
        self.optimizer_state, self.model, self.model_state = self.submission.prepare_for_eval(
            self.workload, self.model, self.workload.model_params_types, self.model_state, self.hyperparameters,
            self.workload.loss_type, self.optimizer_state, [], self.step, self.step_seed + self.step,
        )
        self.workload.sync()
        return clock() - start


def clock() -> float:
    """Wall time on CUDA (the device is synchronised around it), process CPU time on CPU."""
    return time.perf_counter() if torch.cuda.is_available() else time.process_time()


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


def benchmark(workload_name: str, submissions: list[str], steps: int, rounds: int, memory: bool) -> list[dict]:
    workload = load_workload(workload_name, "pytorch", DATA_DIR)
    workload.data_hash()
    trials = {name: Trial(workload, name) for name in submissions}
    for trial in trials.values():
        trial.train(1)
    times: dict[str, list[float]] = {name: [] for name in submissions}
    for _ in range(rounds):
        for name, trial in trials.items():
            times[name].append(trial.train(steps))
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for name in submissions:
        rows.append({
            "workload": workload_name, "submission": name, "step_ms": 1000 * medians[name],
            "ratio": medians[name] / medians[BASELINE], "prepare_for_eval_ms": 1000 * trials[name].prepare_for_eval(),
            "peak_mib": peak_memory_mib(workload_name, name) if memory else None,
            "goal": GOALS.get(name),
        })
    return rows


def print_table(rows: list[dict]) -> None:
    unit = "wall ms" if torch.cuda.is_available() else "cpu ms"
    print(f"{'workload':14} {'submission':20} {unit:>8} {'x AdamW':>8} {'goal':>6} {'eval-prep ms':>12} {'peak MiB':>9}")
    for r in rows:
        goal = f"{r['goal']:.2f}" if r["goal"] else ""
        flag = " !" if r["goal"] and r["ratio"] > r["goal"] else ""
        peak = f"{r['peak_mib']:9.1f}" if r["peak_mib"] is not None else f"{'-':>9}"
        print(f"{r['workload']:14} {r['submission']:20} {r['step_ms']:8.1f} {r['ratio']:8.2f} {goal:>6}"
              f" {r['prepare_for_eval_ms']:12.1f} {peak}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(available_workloads("pytorch", suite="mini")))
    parser.add_argument("--submissions", default=",".join(available_submissions("pytorch")))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per submission per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory children")
    parser.add_argument("--memory-child", nargs=2, metavar=("WORKLOAD", "SUBMISSION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    submissions = [BASELINE] + [s for s in args.submissions.split(",") if s and s != BASELINE]
    rows = [row for w in args.workloads.split(",") for row in benchmark(w, submissions, args.steps, args.rounds, args.memory)]
    print_table(rows)


if __name__ == "__main__":
    main()

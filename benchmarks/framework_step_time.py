"""Step time of each mini workload in JAX relative to PyTorch, through the harness's own trial loop.

    python benchmarks/framework_step_time.py [--workloads fashion_mnist,kjv_lm] [--blocks 3] [--block_steps 20]

For every workload that has a `jax.py`: a real trial (`harness/step_timing.time_harness_blocks`, the
`nadamw` submission under the self-tuning ruleset, seed 0) in PyTorch, then one in JAX, each timed in
`blocks` blocks of `block_steps` steps after a warm-up (JAX compiles in the warm-up). A block is
`block_steps` iterations of the trial loop with the device waited for at both ends. Printed per
workload: each framework's median milliseconds per step and their ratio JAX/PyTorch. Wall clock, all
cores, as trials run: measure on an otherwise idle machine (the contention column says if it was not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.contention import ContentionMonitor  # noqa: E402
from harness.discovery import available_workloads, load_submission, load_workload  # noqa: E402
from harness.step_timing import time_harness_blocks  # noqa: E402


def milliseconds_per_step(name: str, framework: str, data_dir: str, blocks: int, block_steps: int) -> tuple[float, float]:
    """(median ms per step, busy-step share of other processes) of `blocks` blocks of one trial."""
    workload = load_workload(name, framework, data_dir)
    monitor = ContentionMonitor()
    seconds, _ = time_harness_blocks(workload, load_submission("nadamw", framework), None, blocks, block_steps,
                                     contention=monitor)
    return 1e3 * statistics.median(seconds) / block_steps, monitor.summary()["busy_step_share"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", help="comma-separated (default: every mini workload with a jax.py)")
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--block_steps", type=int, default=20)
    args = parser.parse_args()
    names = args.workloads.split(",") if args.workloads else available_workloads("jax", suite="mini")
    print("workload | PyTorch ms/step | JAX ms/step | JAX/PyTorch | busy-step share (torch, jax)")
    for name in names:
        torch_ms, torch_busy = milliseconds_per_step(name, "pytorch", args.data_dir, args.blocks, args.block_steps)
        jax_ms, jax_busy = milliseconds_per_step(name, "jax", args.data_dir, args.blocks, args.block_steps)
        print(f"{name} | {torch_ms:.1f} | {jax_ms:.1f} | {jax_ms / torch_ms:.2f} | {torch_busy:.2f}, {jax_busy:.2f}",
              flush=True)


if __name__ == "__main__":
    main()

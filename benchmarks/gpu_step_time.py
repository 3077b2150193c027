"""Step time and peak memory of an AlgoPerf-scale workload's model on the GPU, ours beside AlgoPerf's own
model definition in the same process, and the harness's overhead over a bare loop.

    python benchmarks/gpu_step_time.py --workload wmt --framework pytorch|jax
        [--algoperf_repo ~/algorithmic-efficiency] [--data_dir DIR] [--batch_size 128] [--steps 30]

1. Model step, ours and AlgoPerf's: one training step (forward in train mode with dropout 0.1, label-smoothed
   (0.1) cross-entropy, backward, AdamW) on the same synthetic batch at AlgoPerf's global batch size (128 rows
   of 256 tokens, every token real), timed one step at a time with the device synchronised (torch:
   `torch.cuda.synchronize`; JAX: `jax.block_until_ready` on the step's outputs), the two models alternating in
   blocks of 5 steps after 3 warm-up steps each (JAX compiles there); printed: each median ms per step and
   ours/AlgoPerf's. Peak memory: torch's `max_memory_allocated` over each model's own steps (reset between
   them); JAX: XLA's memory analysis of each compiled step (arguments + outputs + temporaries − aliased),
   which one process's allocator peak could not separate. AlgoPerf's model is loaded from `--algoperf_repo`
   (a checkout of mlcommons/algorithmic-efficiency; never committed here) by file path, at the same
   configuration as ours.
2. Harness overhead, when `--data_dir` holds prepared wmt data: `benchmarks/harness_overhead.py`'s
   measurement (the real trial loop with `nadamw` against a bare loop of the same step, ABBA blocks, median
   ratio with a 95% bootstrap interval), evaluation shrunk to 128 pairs per split.

`--test_model` runs the test configuration (workloads/wmt/workload.py TEST_CONFIG, and TIMETRIAL_WMT_TEST_MODEL=1
for the harness part, whose data may then be a test preparation) so that the script can be checked on a CPU; on
a GPU give no such flag: the figures are for AlgoPerf's model.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from workloads.wmt import data  # noqa: E402
from workloads.wmt.workload import ALGOPERF_CONFIG, TEST_CONFIG, TEST_MODEL_VARIABLE, TransformerConfig  # noqa: E402

LABEL_SMOOTHING = 0.1  # AlgoPerf's baselines' label_smoothing for wmt
LEARNING_RATE = 1e-3
WARMUP_STEPS, BLOCK_STEPS = 3, 5
EVAL_PAIRS = 128


def synthetic_batch(config: TransformerConfig, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Full rows of random real tokens (3 .. vocab-1: no padding, EOS or BOS), as packed training rows are."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, config.max_length)
    return {key: rng.integers(3, config.vocab_size, shape, dtype=np.int32) for key in ("inputs", "targets")}


def load_file(name: str, path: Path) -> types.ModuleType:
    """A module from a file of the AlgoPerf checkout, without running `algoperf/__init__.py` (which needs an
    installed package's version file): `algoperf` is a bare package pointing at the checkout."""
    root = path.parents[len(name.split(".")) - 1]
    for depth in range(1, len(name.split("."))):
        package = ".".join(name.split(".")[:depth])
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(root.joinpath(*package.split(".")))]
            sys.modules[package] = module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def torch_steps(config: TransformerConfig, batch: dict, algoperf_repo: Path | None) -> tuple[dict, tuple | None]:
    """({name: step function} for ours and, with a checkout, AlgoPerf's torch model; on CUDA, torch's
    (reset, read) functions of the allocator's peak)."""
    import torch
    import torch.nn.functional as F

    from workloads.wmt.torch import Transformer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tensors = {key: torch.as_tensor(value, dtype=torch.int64, device=device) for key, value in batch.items()}
    forwards = {"ours": (Transformer(config), lambda model: model(tensors))}
    if algoperf_repo is not None:
        models = load_file("algoperf.workloads.wmt.wmt_pytorch.models",
                           algoperf_repo / "algoperf/workloads/wmt/wmt_pytorch/models.py")
        model = models.Transformer(ntoken=config.vocab_size, d_model=config.width, nhead=config.heads,
                                   d_hid=config.mlp_width, nlayers=config.encoder_layers,
                                   layer_norm_eps=config.layer_norm_eps)
        forwards["algoperf"] = (model, lambda m: m(tensors["inputs"], tensors["targets"],
                                                   dropout_rate=config.dropout_rate))
    steps = {}
    for name, (model, forward) in forwards.items():
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)

        def step(model=model, forward=forward, optimizer=optimizer) -> None:
            logits = forward(model)
            loss = F.cross_entropy(logits.flatten(0, 1), tensors["targets"].flatten(), label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        steps[name] = step
    return steps, (torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated) if device.type == "cuda" else None


def jax_steps(config: TransformerConfig, batch: dict, algoperf_repo: Path | None) -> tuple[dict, dict]:
    """({name: step function} for ours and, with a checkout, AlgoPerf's Flax model; {name: bytes of XLA's
    memory analysis of its compiled step, or None})."""
    import jax
    import jax.numpy as jnp
    import optax

    from workloads.wmt.jax import Transformer

    arrays = {key: jnp.asarray(value) for key, value in batch.items()}
    applies = {}
    ours = Transformer(config)
    applies["ours"] = (ours.init(jax.random.key(0), arrays, train=False)["params"],
                       lambda params, key: ours.apply({"params": params}, arrays, train=True, rngs={"dropout": key}))
    if algoperf_repo is not None:
        models = load_file("algoperf.workloads.wmt.wmt_jax.models", algoperf_repo / "algoperf/workloads/wmt/wmt_jax/models.py")
        theirs = models.Transformer(models.TransformerConfig(
            vocab_size=config.vocab_size, emb_dim=config.width,
            num_heads=config.heads, num_layers=config.encoder_layers, qkv_dim=config.width, mlp_dim=config.mlp_width,
            max_len=config.max_length, deterministic=False))
        params = theirs.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                             arrays["inputs"], arrays["targets"])["params"]
        applies["algoperf"] = (params, lambda p, key: theirs.apply({"params": p}, arrays["inputs"], arrays["targets"],
                                                                   rngs={"dropout": key},
                                                                   dropout_rate=config.dropout_rate))
    optimizer = optax.adamw(LEARNING_RATE)
    steps, memory = {}, {}
    for name, (params, apply) in applies.items():
        def loss(params, key, apply=apply):
            logits = apply(params, key)
            labels = optax.smooth_labels(jax.nn.one_hot(arrays["targets"], config.vocab_size), LABEL_SMOOTHING)
            return optax.softmax_cross_entropy(logits, labels).mean()

        def train_step(params, state, key, loss=loss):
            grads = jax.grad(loss)(params, key)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        jitted = jax.jit(train_step, donate_argnums=(0, 1))
        carried = [params, optimizer.init(params), jax.random.key(2)]
        analysis = jitted.lower(*carried).compile().memory_analysis()
        memory[name] = None if analysis is None else (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                                      + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)

        def step(jitted=jitted, carried=carried) -> None:
            carried[2], key = jax.random.split(carried[2])
            carried[0], carried[1] = jax.block_until_ready(jitted(carried[0], carried[1], key))

        steps[name] = step
    return steps, memory


def time_models(steps: dict, count: int, peak=None) -> tuple[dict, dict]:
    """Median seconds per step of each model (alternating blocks) and, with torch's `peak`, its peak bytes."""
    seconds, peaks = {name: [] for name in steps}, {}
    for name, step in steps.items():
        if peak:
            peak[0]()
        for _ in range(WARMUP_STEPS):
            step()
        if peak:
            peaks[name] = peak[1]()
    while min(len(s) for s in seconds.values()) < count:
        for name, step in steps.items():
            if peak:
                peak[0]()
            for _ in range(BLOCK_STEPS):
                start = time.perf_counter()
                step()
                seconds[name].append(time.perf_counter() - start)
            if peak:
                peaks[name] = max(peaks[name], peak[1]())
    return {name: statistics.median(s) for name, s in seconds.items()}, peaks


def harness_overhead(framework: str, data_dir: Path, blocks: int, block_steps: int) -> str:
    """`benchmarks/harness_overhead.py`'s verdict for wmt, or why it was not measured."""
    from benchmarks.harness_overhead import measure, shrink_evaluation
    from benchmarks.timing import median_interval, verdict
    from harness.discovery import load_workload
    from harness.errors import UserInputError

    workload = load_workload("wmt", framework, data_dir)
    try:
        workload.load_splits()
    except UserInputError as exc:
        return f"not measured ({exc})"
    shrink_evaluation(workload, EVAL_PAIRS)
    result = measure(workload, blocks, block_steps, "wall")
    interval = median_interval(result["ratios"])
    per_step = {side: 1e3 * statistics.median(result[side]) / block_steps for side in ("harness", "bare")}
    return (f"harness {per_step['harness']:.2f} ms, bare {per_step['bare']:.2f} ms per step; harness/bare median "
            f"{interval}; goal <= 1.02: {verdict(interval, 1.02)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="wmt", choices=["wmt"])
    parser.add_argument("--framework", default="pytorch", choices=["pytorch", "jax"])
    parser.add_argument("--algoperf_repo", type=Path, help="a checkout of mlcommons/algorithmic-efficiency")
    parser.add_argument("--data_dir", type=Path, help="prepared wmt data, for the harness overhead")
    parser.add_argument("--batch_size", type=int, default=128, help="global batch (AlgoPerf's baselines: 128)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--blocks", type=int, default=10, help="harness-overhead block pairs")
    parser.add_argument("--block_steps", type=int, default=5)
    parser.add_argument("--test_model", action="store_true", help="TEST_CONFIG (CPU checks of this script)")
    args = parser.parse_args(argv)
    if args.algoperf_repo is not None and not (args.algoperf_repo / "algoperf/workloads/wmt").is_dir():
        parser.error(f"--algoperf_repo {args.algoperf_repo} has no algoperf/workloads/wmt (a checkout of "
                     "mlcommons/algorithmic-efficiency is expected)")
    if args.test_model:
        os.environ[TEST_MODEL_VARIABLE] = "1"  # the harness-overhead part's workload too
    config = replace(TEST_CONFIG, vocab_size=512) if args.test_model else ALGOPERF_CONFIG
    batch = synthetic_batch(config, args.batch_size)
    if args.framework == "pytorch":
        import torch

        steps, peak = torch_steps(config, batch, args.algoperf_repo)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        medians, peaks = time_models(steps, args.steps, peak)
    else:
        import jax

        steps, peaks = jax_steps(config, batch, args.algoperf_repo)
        device = jax.devices()[0].device_kind
        medians, _ = time_models(steps, args.steps)
    print(f"wmt ({args.framework}) on {device}: batch {args.batch_size} x {config.max_length} tokens, "
          f"{'TEST model' if args.test_model else 'AlgoPerf model'}, median of {args.steps} synchronised steps")
    for name, seconds in medians.items():
        memory = f"{peaks[name] / 2**30:.2f} GiB" if peaks.get(name) else "n/a"
        print(f"  {name}: {1e3 * seconds:.1f} ms per step, peak memory {memory}")
    if "algoperf" in medians:
        print(f"  ours/AlgoPerf's step time: {medians['ours'] / medians['algoperf']:.3f}")
    else:
        print("  AlgoPerf's model: not measured (no --algoperf_repo)")
    if args.data_dir is None:
        print("harness overhead: not measured (no --data_dir with prepared wmt data)")
    else:
        print(f"harness overhead: {harness_overhead(args.framework, args.data_dir, args.blocks, args.block_steps)}")


if __name__ == "__main__":
    main()

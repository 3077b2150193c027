"""How long does rescoring a big tree of run records take?

    python benchmarks/scoring_speed.py                    # ~30,000 eval files, TimeTrial layout
    python benchmarks/scoring_speed.py --layout algoperf  # the same in AlgoPerf's layout

Writes a synthetic tree (submissions × workloads × studies × trials, one evaluation file per
trial with --evals evaluations each) into a temporary directory, then times `load_runs` (ingest)
and `score_runs` (scores, bootstrap intervals, comparisons) and prints the seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scoring import ScoringConfig, load_runs, score_runs  # noqa: E402

LEADING = (
    "accumulated_eval_time,accumulated_logging_time,accumulated_submission_time,"
    "global_step,preemption_count,score,total_duration"
)


def _rows(rng: np.random.Generator, n: int, speed: float) -> list[dict]:
    times = np.cumsum(rng.uniform(50, 70, n)) / speed
    error = 0.9 * np.exp(-times / 300.0) + rng.normal(0, 0.01, n)
    rows = []
    for i in range(n):
        rows.append(
            {
                "global_step": 100 * (i + 1),
                "accumulated_submission_time": float(times[i]),
                "accumulated_eval_time": 2.0 * (i + 1),
                "accumulated_logging_time": 0.01 * (i + 1),
                "total_duration": float(times[i]) + 2.0 * (i + 1),
                "preemption_count": 0,
                "train/loss": float(error[i] * 1.5),
                "validation/error_rate": float(error[i]),
                "validation/loss": float(error[i] * 1.6),
                "test/error_rate": float(error[i] + 0.01),
                "test/loss": math.nan if i % 7 == 3 else float(error[i] * 1.7),
            }
        )
    return rows


def write_tree(root: Path, files: int, evals: int, layout: str, seed: int = 0) -> int:
    """Write about `files` trials (one evaluation file each); returns how many were written."""
    rng = np.random.default_rng(seed)
    names = [f"w{i}" for i in range(10)] if layout == "timetrial" else list(ALGOPERF_METRIC)
    submissions, workloads, studies = 12, len(names), 5
    trials = max(1, round(files / (submissions * workloads * studies)))
    written = 0
    for s in range(submissions):
        speed = 1.0 + 0.1 * s
        for w in range(workloads):
            for k in range(studies):
                for i in range(trials):
                    rows = _rows(rng, evals, speed * rng.uniform(0.7, 1.3))
                    if layout == "timetrial":
                        d = root / "exp" / f"w{w}_pytorch" / f"sub{s}" / f"study_{k}" / f"trial_{i}"
                        d.mkdir(parents=True)
                        meta = {
                            "workload": f"w{w}",
                            "framework": "pytorch",
                            "submission": f"sub{s}",
                            "study": k,
                            "trial": i,
                            "ruleset": "external",
                            "rng_seed": i,
                            "hardware": {"fingerprint": "bench", "cpu": "cpu", "gpu": None, "num_devices": 1},
                            "target_metric_name": "error_rate",
                            "metric_direction": "min",
                            "validation_target_value": 0.05,
                            "test_target_value": 0.06,
                            "max_allowed_runtime_sec": 3000.0,
                            "step_hint": 1000,
                        }
                        (d / "meta.json").write_text(json.dumps(meta))
                        (d / "hparams.json").write_text(json.dumps({"lr": float(rng.uniform(1e-4, 1e-2))}))
                        (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                        (d / "summary.json").write_text(json.dumps({"status": "budget", "time_to_target": None}))
                    else:
                        d = root / "logs" / f"sub{s}" / f"study_{k}" / f"{names[w]}_jax" / f"trial_{i + 1}"
                        d.mkdir(parents=True)
                        metric = ALGOPERF_METRIC[names[w]]
                        lines = [f"{LEADING},train/loss,{metric},validation/loss"]
                        for r in rows:
                            t = r["accumulated_submission_time"]
                            value = _algoperf_value(metric, r["validation/error_rate"])
                            lines.append(
                                f"{r['accumulated_eval_time']},{r['accumulated_logging_time']},{t},{r['global_step']},"
                                f"0,{t},{r['total_duration']},{r['train/loss']},{value},{r['validation/loss']}"
                            )
                        (d / "eval_measurements.csv").write_text("\n".join(lines) + "\n")
                        (d / "hparams.json").write_text(json.dumps({"lr": float(rng.uniform(1e-4, 1e-2))}))
                    written += 1
    return written


# AlgoPerf v0.6's base workloads, their target metrics, and values that cross the targets.
ALGOPERF_METRIC = {
    "criteo1tb": "validation/loss",
    "fastmri": "validation/ssim",
    "imagenet_resnet": "validation/accuracy",
    "imagenet_vit": "validation/accuracy",
    "librispeech_conformer": "validation/wer",
    "librispeech_deepspeech": "validation/wer",
    "finewebedu_lm": "validation/ppl",
    "ogbg": "validation/mean_average_precision",
    "wmt": "validation/bleu",
}


def _algoperf_value(metric: str, error: float) -> float:
    return {
        "validation/loss": 0.12 + error / 10,
        "validation/ssim": 0.74 - error,
        "validation/accuracy": 0.80 - error,
        "validation/wer": 0.07 + error / 2,
        "validation/ppl": 20.0 + 30 * error,
        "validation/mean_average_precision": 0.30 - error,
        "validation/bleu": 32.0 - 20 * error,
    }[metric]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=30_000, help="number of evaluation files (trials)")
    parser.add_argument("--evals", type=int, default=20, help="evaluations per file")
    parser.add_argument("--layout", choices=("timetrial", "algoperf"), default="timetrial")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--keep", action="store_true", help="keep the generated tree and print its path")
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where to write the tree (default: /dev/shm when present, so that creating and deleting "
        "150,000 small files does not dominate; the files are read from the page cache either way)",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="scoring_speed_", dir=args.dir))
    try:
        start = time.perf_counter()
        n = write_tree(root, args.files, args.evals, args.layout)
        seconds = time.perf_counter() - start
        print(f"wrote {n} trials ({n * args.evals} evaluations, {args.layout} layout) under {root} in {seconds:.1f} s")
        start = time.perf_counter()
        runs = load_runs([root])
        ingest = time.perf_counter() - start
        start = time.perf_counter()
        config = ScoringConfig.algoperf("0.6") if args.layout == "algoperf" else ScoringConfig()
        board = score_runs(runs, config, n_bootstrap=args.bootstrap)
        scoring = time.perf_counter() - start
        print(f"ingest: {ingest:.2f} s for {len(runs.trials)} trials, {len(runs.evals)} evaluation rows")
        print(f"score:  {scoring:.2f} s ({len(board.table)} entries, {args.bootstrap} bootstrap resamples)")
        print(f"total:  {ingest + scoring:.2f} s")
    finally:
        if args.keep:
            print(f"tree kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

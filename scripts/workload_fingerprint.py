"""Fingerprints of the mini workloads, to prove that a refactor keeps their behaviour.

    python scripts/workload_fingerprint.py --output before.json     # on the old code
    python scripts/workload_fingerprint.py --compare before.json    # on the new code: exits 1 on a difference

Per workload: the data hash; a hash of each of the first training batches (seed DATA_SEED, the
reference batch size); the evaluation metrics of a freshly initialised model (every evaluation
batch, the metric code and the accumulation go into them); and the evaluation row after
TRAIN_STEPS steps of the NAdamW baseline in a real trial (`run_trial`, seed 0). Metrics are
compared exactly (their `repr`): on one CPU the same code gives the same bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.discovery import available_workloads, load_submission, load_workload  # noqa: E402
from harness.records import TrialRecord  # noqa: E402
from harness.trial import run_trial  # noqa: E402

DATA_SEED, FIRST_BATCHES, MODEL_SEED, TRAIN_STEPS = 12345, 3, 7, 5


class _NoProgress:
    def on_step(self, global_step, clock) -> None: ...
    def on_eval(self, global_step, eval_row, clock) -> None: ...


def value_hash(value, digest) -> None:
    """Fold a batch value (array, tensor, tuple of them, list of texts, number) into `digest`."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        for key in sorted(value):
            digest.update(key.encode())
            value_hash(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            value_hash(item, digest)
    elif isinstance(value, (str, int, float)):
        digest.update(repr(value).encode())
    else:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())


def batch_hash(batch: dict) -> str:
    digest = hashlib.sha256()
    value_hash(batch, digest)
    return digest.hexdigest()[:16]


def fingerprint(name: str, framework: str, data_dir: str) -> dict:
    workload = load_workload(name, framework, data_dir)
    queue = workload._build_input_queue(DATA_SEED, "train", str(workload.data_dir), workload.reference_batch_size)
    batches = [batch_hash(next(queue)) for _ in range(FIRST_BATCHES)]
    params, model_state = workload.init_model_fn(MODEL_SEED)
    initial = workload.eval_model(workload.eval_batch_size, params, model_state, 0, str(workload.data_dir), None, 0)
    with tempfile.TemporaryDirectory() as tmp:
        record = TrialRecord(Path(tmp))
        outcome = run_trial(load_workload(name, framework, data_dir), load_submission("nadamw", framework), None, 0,
                            float("inf"), record, _NoProgress(), max_global_steps=TRAIN_STEPS,
                            eval_every_steps=TRAIN_STEPS)
        trained = {k: v for k, v in record.eval_rows[-1].items() if "/" in k or k == "global_step"}
    return {"data_hash": workload.data_hash(), "first_batches": batches,
            "initial_eval": {k: repr(v) for k, v in initial.items()},
            "trained_eval": {k: repr(v) for k, v in trained.items()}, "status": outcome.status}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", help="comma-separated names (default: the mini suite)")
    parser.add_argument("--framework", default="pytorch")
    parser.add_argument("--data_dir", default=str(Path.home() / ".cache" / "timetrial" / "data"))
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", type=Path, help="write the fingerprints here")
    out.add_argument("--compare", type=Path, help="compare with fingerprints written before")
    args = parser.parse_args()
    names = args.workload.split(",") if args.workload else available_workloads(args.framework, suite="mini")
    found = {}
    for name in names:
        found[name] = fingerprint(name, args.framework, args.data_dir)
        print(name, json.dumps(found[name]), flush=True)
    if args.output:
        args.output.write_text(json.dumps(found, indent=1, sort_keys=True))
        return 0
    before = json.loads(args.compare.read_text())
    differ = [name for name in names if before.get(name) != found[name]]
    for name in differ:
        for key in sorted(set(before.get(name, {})) | set(found[name])):
            if before.get(name, {}).get(key) != found[name].get(key):
                print(f"DIFFERS {name} {key}:\n  before {before.get(name, {}).get(key)}\n  now    {found[name].get(key)}")
    print("identical" if not differ else f"{len(differ)} of {len(names)} workloads differ: {', '.join(differ)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

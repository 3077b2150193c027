"""The toy workload's framework-free part: seeded Gaussian blobs (3 classes, 4-D), facts and metrics."""

from __future__ import annotations

import hashlib

import numpy as np

from harness import spec


def blobs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, n)
    centres = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]], dtype=np.float32)
    inputs = centres[targets] + rng.normal(size=(n, 4)).astype(np.float32)
    return {"inputs": inputs.astype(np.float32), "targets": targets.astype(np.int64)}


class ToyWorkload(spec.Workload):
    name = "toy"
    target_metric_name = "error_rate"
    metric_direction = "min"
    validation_target_value = 0.2
    test_target_value = 0.2
    max_allowed_runtime_sec = 60.0
    eval_period_time_sec = 0.0
    step_hint = 50
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
    reference_batch_size = 16
    num_train_examples = 256
    num_validation_examples = 64
    num_test_examples = 64
    num_eval_train_examples = 64
    eval_batch_size = 32

    def read_splits(self):
        splits = {"train": blobs(256, 1), "validation": blobs(64, 2), "test": blobs(64, 3)}
        digest = hashlib.sha256(b"".join(a.tobytes() for s in splits.values() for a in s.values()))
        return splits, digest.hexdigest()

    def metrics_from_sums(self, sums):
        return {"loss": sums["loss"] / sums["count"], "error_rate": sums["errors"] / sums["count"]}


"""Fashion-MNIST image classification: the mini suite's analog of AlgoPerf's imagenet_resnet.

Splits: the 60,000 training images are split by a fixed permutation into 55,000 train and 5,000
validation images; test is the official 10,000-image test set. Metric: error rate (lower is better).
Targets and budget come from `scripts/set_targets.py`; see docs/targets.md for the runs behind them.
"""

from __future__ import annotations

import math

import numpy as np

from harness import spec
from workloads.fashion_mnist import data

NUM_VALIDATION = 5_000
SPLIT_SEED = 0  # fixed permutation that carves validation out of the official training set


class FashionMnistWorkload(spec.Workload):
    name = "fashion_mnist"
    suite = "mini"
    target_metric_name = "error_rate"
    metric_direction = "min"
    # From scripts/set_targets.py (five-point tuning, median of three seeds) on a 2-core CPU:
    # docs/targets/fashion_mnist.json, docs/targets.md.
    validation_target_value = 0.0722
    test_target_value = 0.0797
    # 1.5 x 1667 steps (the latest seed's steps to target) x calibration_seconds_per_step, rounded up
    # to 10 s (docs/targets.md); scaled on other machines (harness/machine_profile.py).
    max_allowed_runtime_sec = 110.0
    calibration_seconds_per_step = 0.04303  # python -m harness.calibrate on the calibration machine
    # max(budget / 20, 6 x one evaluation's 1.50 s) (docs/targets.md): evaluation under 15 % of a trial
    eval_period_time_sec = 11.5
    step_hint = 1800  # about 2 minutes of NAdamW steps on a 2-core CPU (docs/targets.md)
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
    reference_batch_size = 128
    num_train_examples = 60_000 - NUM_VALIDATION
    num_validation_examples = NUM_VALIDATION
    num_test_examples = 10_000
    num_eval_train_examples = NUM_VALIDATION
    # Fastest of 32/64/128/256/500/1000 on a quiet 2-core CPU: 20k images in 1.5 s at 64, 3.6 s at 256
    # (a small batch's activations stay in the CPU's caches).
    eval_batch_size = 64

    def read_splits(self) -> tuple[dict[str, dict[str, np.ndarray]], str]:
        """Standardised float32 images (N, 1, 28, 28) and int64 labels per split."""
        arrays, data_hash = data.load_arrays(self.data_dir)
        images = arrays["train_images"].astype(np.float32) / 255.0
        mean, std = images.mean(), images.std()
        self._pixel_statistics = (float(mean), float(std))
        order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
        validation, train = order[:NUM_VALIDATION], order[NUM_VALIDATION:]

        def split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
            return {"inputs": ((x - mean) / std)[:, None], "targets": y.astype(np.int64)}

        test_images = arrays["test_images"].astype(np.float32) / 255.0
        splits = {
            "train": split(images[train], arrays["train_labels"][train]),
            "validation": split(images[validation], arrays["train_labels"][validation]),
            "test": split(test_images, arrays["test_labels"]),
        }
        return splits, data_hash

    @property
    def train_mean(self) -> float:
        """Mean pixel value (0–1 scale) of the 60,000 official training images; the inputs are already
        standardised with it and `train_stddev` (AlgoPerf's MNIST workload gives the same statistics)."""
        self.load_splits()
        return self._pixel_statistics[0]

    @property
    def train_stddev(self) -> float:
        """Standard deviation of the pixel values (0–1 scale) of the official training images."""
        self.load_splits()
        return self._pixel_statistics[1]

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        count = sums["count"]
        loss = sums["loss"] / count
        return {
            "loss": loss if math.isfinite(loss) else float("nan"),
            "error_rate": sums["errors"] / count,
            "accuracy": 1.0 - sums["errors"] / count,
        }

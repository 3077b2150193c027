"""NAdamW (AlgoPerf's baseline) evaluated at LAWA, the latest-weight average (Kaddour, 2022,
arXiv:2209.14981; Sanyal et al., 2023, arXiv:2306.03241): the mean of the latest k snapshots of the
weights, one every ν steps, swapped in by `prepare_for_eval` once k snapshots exist and out again
by the next `update_params` (`harness/backends/torch/averaging.py`). ν is a fraction of step_hint.

    python submit.py --workload kjv_lm --submission lawa
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.averaging import LatestWeightAverage, averaging_functions
from submissions.lawa.common import SELF_TUNING_DEFAULTS, interval
from submissions.nadamw.torch import make_optimizer


def make_averager(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> LatestWeightAverage:
    return LatestWeightAverage(model, queue_length=hyperparameters.lawa_queue_length,
                               interval=interval(hyperparameters, workload.step_hint))


_functions = averaging_functions(make_optimizer, make_averager, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

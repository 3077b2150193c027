"""NAdamW (AlgoPerf's baseline) evaluated at an exponential moving average of its weights:
θ̄ ← β θ̄ + (1 − β) θ after every step, swapped in by `prepare_for_eval` and out again by the next
`update_params` (`harness/backends/torch/averaging.py`). β = 1 − 1/(h · step_hint): the average spans a
fixed fraction h of the run on every workload.

    python submit.py --workload kjv_lm --submission ema
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.averaging import ExponentialMovingAverage, averaging_functions
from submissions.ema.common import SELF_TUNING_DEFAULTS, decay
from submissions.nadamw.torch import make_optimizer


def make_averager(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> ExponentialMovingAverage:
    return ExponentialMovingAverage(model, decay=decay(hyperparameters, workload.step_hint))


_functions = averaging_functions(make_optimizer, make_averager, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

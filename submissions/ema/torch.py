"""NAdamW (AlgoPerf's baseline) evaluated at an exponential moving average of its weights:
θ̄ ← β θ̄ + (1 − β) θ after every step, swapped in by `prepare_for_eval` and out again by the next
`update_params` (`harness/backends/torch/averaging.py`). β = 1 − 1/(h · step_hint): the average spans a
fixed fraction h of the run on every workload.

    python submit.py --workload kjv_lm --submission ema
"""

from __future__ import annotations

import torch

from harness import spec
from submissions.nadamw.torch import SELF_TUNING_DEFAULTS as NADAMW_DEFAULTS
from submissions.nadamw.torch import make_optimizer
from harness.backends.torch.averaging import ExponentialMovingAverage, averaging_functions

# Self-tuning ruleset: NAdamW's (the nadamw submission's), with an averaging horizon of 5% of
# step_hint, the same window as the lawa submission's default (5 snapshots 1% apart); chosen here,
# not taken from a paper.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({**NADAMW_DEFAULTS._asdict(), "ema_horizon_factor": 0.05})


def make_averager(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> ExponentialMovingAverage:
    horizon = hyperparameters.ema_horizon_factor * workload.step_hint
    return ExponentialMovingAverage(model, decay=max(0.0, 1.0 - 1.0 / horizon))


_functions = averaging_functions(make_optimizer, make_averager, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

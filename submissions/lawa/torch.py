"""NAdamW (AlgoPerf's baseline) evaluated at LAWA, the latest-weight average (Kaddour, 2022,
arXiv:2209.14981; Sanyal et al., 2023, arXiv:2306.03241): the mean of the latest k snapshots of the
weights, one every ν steps, swapped in by `prepare_for_eval` once k snapshots exist and out again
by the next `update_params` (`harness/backends/torch/averaging.py`). ν is a fraction of step_hint.

    python submit.py --workload kjv_lm --submission lawa
"""

from __future__ import annotations

import torch

from harness import spec
from submissions.nadamw.torch import SELF_TUNING_DEFAULTS as NADAMW_DEFAULTS
from submissions.nadamw.torch import make_optimizer
from harness.backends.torch.averaging import LatestWeightAverage, averaging_functions

# Self-tuning ruleset: NAdamW's (the nadamw submission's), with k = 5 snapshots taken 1% of step_hint
# apart (a 5% window); chosen here, not taken from a paper (Kaddour snapshots once per epoch).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    **NADAMW_DEFAULTS._asdict(), "lawa_queue_length": 5, "lawa_interval_factor": 0.01,
})


def make_averager(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> LatestWeightAverage:
    interval = max(1, round(hyperparameters.lawa_interval_factor * workload.step_hint))
    return LatestWeightAverage(model, queue_length=hyperparameters.lawa_queue_length, interval=interval)


_functions = averaging_functions(make_optimizer, make_averager, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

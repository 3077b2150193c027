"""NAdamW (AlgoPerf's baseline, `submissions/nadamw/jax.py`) evaluated at an exponential moving average
of its weights, in JAX: θ̄ ← β θ̄ + (1 − β) θ after every step, returned by `prepare_for_eval` while
training goes on from the live weights (`harness/backends/jax/averaging.py`). β = 1 − 1/(h · step_hint):
the average spans a fixed fraction h of the run on every workload.

    python submit.py --framework jax --workload kjv_lm --submission ema
"""

from __future__ import annotations

from harness import spec
from harness.backends.jax.averaging import ExponentialMovingAverage, averaging_functions
from submissions.ema.common import SELF_TUNING_DEFAULTS, decay
from submissions.nadamw.jax import make_optimizer


def make_averager(params, hyperparameters, workload: spec.Workload) -> ExponentialMovingAverage:
    return ExponentialMovingAverage(decay(hyperparameters, workload.step_hint))


_functions = averaging_functions(make_optimizer, make_averager, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

"""DoG, "Distance over Gradients" (Ivgi, Hinder & Carmon, 2023, ICML, arXiv:2302.12022) in JAX: optax's
`optax.contrib.dog`, the update of the authors' `dog.DoG` that `torch.py` uses (global DoG, r_ε from
reps_rel, weight decay added to the gradient before Σ‖g‖²), evaluated at the polynomial-decay average of
`dog.PolynomialDecayAverager` (`harness/backends/jax/averaging.py`):

    η_t = max_{i≤t} ‖x_i − x_0‖ / √(Σ_{i≤t} ‖g_i‖²),   x_{t+1} = x_t − η_t g_t,   (r_ε = reps_rel · (1 + ‖x_0‖))
    x̄_t = (1 − (1+γ)/(t+γ)) x̄_{t−1} + (1+γ)/(t+γ) x_t,   γ = 8   (BatchNorm statistics included)

No learning rate and no schedule.

    python submit.py --framework jax --workload fashion_mnist --submission dog --tuning_ruleset self
"""

from __future__ import annotations

import optax

from harness import spec
from harness.backends.jax.averaging import PolynomialDecayAverage, averaging_functions, has_batch_norm
from submissions.dog.common import (
    AVERAGING_GAMMA, EPSILON, RELATIVE_LEARNING_RATE, SELF_TUNING_DEFAULTS, self_tuning_point,
)


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = self_tuning_point(has_batch_norm(params)) if hyperparameters is None else hyperparameters
    return optax.contrib.dog(RELATIVE_LEARNING_RATE, init_step=("heuristic", hp.reps_rel), eps=EPSILON,
                             weight_decay=hp.weight_decay)


def make_averager(params, hyperparameters, workload: spec.Workload) -> PolynomialDecayAverage:
    return PolynomialDecayAverage(AVERAGING_GAMMA)


_functions = averaging_functions(make_optimizer, make_averager, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

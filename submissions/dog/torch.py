"""DoG, "Distance over Gradients" (Ivgi, Hinder & Carmon, 2023, ICML, arXiv:2302.12022): parameter-free
SGD, with the polynomial-decay iterate averaging its authors prescribe, both from their
`dog-optimizer` package (`dog.DoG`, `dog.PolynomialDecayAverager`):

    η_t = max_{i≤t} ‖x_i − x_0‖ / √(Σ_{i≤t} ‖g_i‖²),   x_{t+1} = x_t − η_t g_t,   (r_ε = reps_rel · (1 + ‖x_0‖))
    x̄_t = (1 − (1+γ)/(t+γ)) x̄_{t−1} + (1+γ)/(t+γ) x_t,   γ = 8

The average (BatchNorm statistics included) is swapped in by `prepare_for_eval` and out again by the
next `update_params` (`harness/backends/torch/averaging.py`). No learning rate and no schedule.

    python submit.py --workload fashion_mnist --submission dog --tuning_ruleset self
"""

from __future__ import annotations

import dog
import torch

from harness import spec
from harness.backends.torch.averaging import ModuleAverage, averaging_functions, has_batch_norm
from submissions.dog.common import (
    AVERAGING_GAMMA, EPSILON, RELATIVE_LEARNING_RATE, SELF_TUNING_DEFAULTS, self_tuning_point,
)


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> torch.optim.Optimizer:
    hp = self_tuning_point(has_batch_norm(model)) if hyperparameters is None else hyperparameters
    return dog.DoG(
        model.parameters(), reps_rel=hp.reps_rel, lr=RELATIVE_LEARNING_RATE, weight_decay=hp.weight_decay,
        eps=EPSILON,
    )


def make_averager(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> ModuleAverage:
    return ModuleAverage(model, dog.PolynomialDecayAverager(model, gamma=AVERAGING_GAMMA))


_functions = averaging_functions(make_optimizer, make_averager, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

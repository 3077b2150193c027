"""SGD with Nesterov momentum (Sutskever et al., 2013) and AlgoPerf's schedule for it: linear warmup,
linear decay to `end_factor` at `decay_steps_factor * step_hint`, then constant (AlgoPerf paper
baseline `nesterov`, Dahl et al., 2023). The update is PyTorch's `torch.optim.SGD(nesterov=True)`,
with L2 weight decay coupled to the gradient, as in that baseline.

    python submit.py --workload fashion_mnist --submission sgd_nesterov --num_tuning_trials 5
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.schedules import warmup_linear_decay
from submissions.sgd_nesterov.common import SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = torch.optim.SGD(
        model.parameters(), lr=hp.learning_rate, momentum=1.0 - hp.one_minus_beta1, weight_decay=hp.weight_decay,
        nesterov=True,
    )
    scheduler = warmup_linear_decay(
        optimizer, workload.step_hint, hp.warmup_factor, hp.decay_steps_factor, hp.end_factor
    )
    return optimizer, scheduler

"""Schedule-free SGD (Defazio et al., 2024, arXiv:2405.15682): `schedulefree.SGDScheduleFree`, with
the train/eval switching and BatchNorm refresh of `harness/backends/torch/averaging.py`. No
learning-rate schedule besides linear warmup.

    python submit.py --workload fashion_mnist --submission schedule_free_sgd
"""

from __future__ import annotations

import schedulefree
import torch

from harness import spec
from harness.backends.torch.averaging import schedule_free_functions

WEIGHT_LR_POWER = 2.0  # SGDScheduleFree default

# Self-tuning ruleset: SGDScheduleFree's defaults (lr 1.0, momentum β = 0.9, r = 0); weight decay 1e-4
# (He et al., 2016, as the sgd_nesterov submission); warmup 5% as in AlgoPerf's nesterov search space.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 1.0, "one_minus_beta1": 0.1, "weight_decay": 1e-4, "warmup_factor": 0.05, "r": 0.0,
})


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> torch.optim.Optimizer:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return schedulefree.SGDScheduleFree(
        model.parameters(), lr=hp.learning_rate, momentum=1.0 - hp.one_minus_beta1, weight_decay=hp.weight_decay,
        warmup_steps=int(hp.warmup_factor * workload.step_hint), r=hp.r, weight_lr_power=WEIGHT_LR_POWER,
    )


_functions = schedule_free_functions(make_optimizer, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
data_selection = _functions["data_selection"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

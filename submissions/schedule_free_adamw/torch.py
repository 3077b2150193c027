"""Schedule-free AdamW (Defazio et al., 2024, arXiv:2405.15682; winner of AlgoPerf v0.5's
self-tuning track): `schedulefree.AdamWScheduleFree`, with the train/eval switching and BatchNorm
refresh of `harness/backends/torch/averaging.py`. No learning-rate schedule besides linear warmup.

    python submit.py --workload fashion_mnist --submission schedule_free_adamw
"""

from __future__ import annotations

import schedulefree
import torch

from harness import spec
from harness.backends.torch.averaging import schedule_free_functions
from submissions.schedule_free_adamw.common import EPSILON, SELF_TUNING_DEFAULTS, WEIGHT_LR_POWER, warmup_steps


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> torch.optim.Optimizer:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return schedulefree.AdamWScheduleFree(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay, warmup_steps=warmup_steps(hp, workload.step_hint), r=hp.r,
        weight_lr_power=WEIGHT_LR_POWER,
    )


_functions = schedule_free_functions(make_optimizer, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
data_selection = _functions["data_selection"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

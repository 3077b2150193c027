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

EPSILON = 1e-8  # AdamWScheduleFree default
WEIGHT_LR_POWER = 2.0  # AdamWScheduleFree default: c_{t+1} ∝ γ_t²

# Self-tuning ruleset: the hyperparameters of the authors' AlgoPerf self-tuning submission
# (schedulefree/algoperf/self_tuning/schedule_free_adamw/submission.py, HPARAMS).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 0.0025, "one_minus_beta1": 0.1, "beta2": 0.9955159689799007,
    "weight_decay": 0.08121616522670176, "warmup_factor": 0.02, "r": 0.75, "label_smoothing": 0.2,
    "dropout_rate": 0.1,
})


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload) -> torch.optim.Optimizer:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return schedulefree.AdamWScheduleFree(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay, warmup_steps=int(hp.warmup_factor * workload.step_hint), r=hp.r,
        weight_lr_power=WEIGHT_LR_POWER,
    )


_functions = schedule_free_functions(make_optimizer, SELF_TUNING_DEFAULTS)
init_optimizer_state = _functions["init_optimizer_state"]
data_selection = _functions["data_selection"]
update_params = _functions["update_params"]
prepare_for_eval = _functions["prepare_for_eval"]

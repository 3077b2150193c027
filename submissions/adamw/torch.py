"""AdamW (Loshchilov & Hutter, 2019) with linear warmup and cosine decay: AlgoPerf's paper baseline
(Dahl et al., 2023, arXiv:2306.07179). The update is PyTorch's own `torch.optim.AdamW`.

    python submit.py --workload fashion_mnist --submission adamw --num_tuning_trials 5
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.schedules import warmup_cosine_decay

# Self-tuning ruleset: torch.optim.AdamW's defaults (lr 1e-3, betas (0.9, 0.999), weight decay 1e-2)
# with the warmup fraction of AlgoPerf's AdamW search space (search_space.json).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 1e-3, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 1e-2, "warmup_factor": 0.05,
})
EPSILON = 1e-8  # AlgoPerf's AdamW baseline


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay,
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

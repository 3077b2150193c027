"""AdamW (Loshchilov & Hutter, 2019) with linear warmup and cosine decay: AlgoPerf's paper baseline
(Dahl et al., 2023, arXiv:2306.07179). The update is PyTorch's own `torch.optim.AdamW`.

    python submit.py --workload fashion_mnist --submission adamw --num_tuning_trials 5
"""

from __future__ import annotations

import torch

from harness import spec
from harness.backends.torch.schedules import warmup_cosine_decay
from submissions.adamw.common import EPSILON, SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=hp.learning_rate, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay,
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

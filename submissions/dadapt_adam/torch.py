"""D-Adaptation Adam (Defazio & Mishchenko, 2023, ICML, arXiv:2301.07733): Adam whose step size d is
a lower bound on the distance to the solution, grown during training, from the authors'
`dadaptation` package (v3, `DAdaptAdam`), with AdamW-style decoupled weight decay and AlgoPerf's
AdamW schedule (linear warmup, cosine decay to 0 at step_hint).

    python submit.py --workload kjv_lm --submission dadapt_adam --tuning_ruleset self

Update: m ← β₁m + (1−β₁) d g, v ← β₂v + (1−β₂) g², θ ← θ − η m/(√v + ε) − η d λ θ, with d the
D-Adaptation estimate and η the scheduled multiplier.
"""

from __future__ import annotations

import dadaptation
import torch

from harness import spec
from harness.backends.torch.schedules import warmup_cosine_decay

LEARNING_RATE = 1.0  # "Set the LR parameter to 1.0" (dadaptation README)
EPSILON = 1e-8  # DAdaptAdam default

# Self-tuning ruleset: DAdaptAdam's β = (0.9, 0.999); weight decay 1e-2, torch.optim.AdamW's default,
# since the README advises decoupled decay at the usual AdamW value or a few times more; warmup 5%
# as in AlgoPerf's AdamW search space ("use the same learning rate scheduler you would normally use").
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 1e-2, "warmup_factor": 0.05,
})


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = dadaptation.DAdaptAdam(
        model.parameters(), lr=LEARNING_RATE, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay, decouple=True,
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

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
from submissions.dadapt_adam.common import D0, EPSILON, LEARNING_RATE, SELF_TUNING_DEFAULTS


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = dadaptation.DAdaptAdam(
        model.parameters(), lr=LEARNING_RATE, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay, decouple=True, d0=D0,
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

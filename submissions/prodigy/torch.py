"""Prodigy (Mishchenko & Defazio, 2024, ICML, arXiv:2306.06101): Adam whose step size d is estimated
on the fly from the distance travelled, from the authors' `prodigyopt` package; with cosine
annealing to zero at step_hint, the schedule the package's README recommends.

    python submit.py --workload fashion_mnist --submission prodigy --tuning_ruleset self

Update (decoupled weight decay, no bias correction): m ← β₁m + (1−β₁) d g, v ← β₂v + (1−β₂) d² g²,
θ ← θ − η d m/(√v + d ε) − η d λ θ, with d grown from d₀ by Prodigy's distance estimate.
"""

from __future__ import annotations

import prodigyopt
import torch

from harness import spec
from harness.backends.torch.schedules import warmup_cosine_decay
from submissions.prodigy.common import D0, EPSILON, LEARNING_RATE, SELF_TUNING_DEFAULTS, uses_safeguard_warmup


def make_optimizer(model: torch.nn.Module, hyperparameters, workload: spec.Workload):
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    optimizer = prodigyopt.Prodigy(
        model.parameters(), lr=LEARNING_RATE, betas=(1.0 - hp.one_minus_beta1, hp.beta2), eps=EPSILON,
        weight_decay=hp.weight_decay, d0=D0, d_coef=hp.d_coef, safeguard_warmup=uses_safeguard_warmup(hp),
    )
    return optimizer, warmup_cosine_decay(optimizer, workload.step_hint, hp.warmup_factor)

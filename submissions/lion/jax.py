"""Lion (Chen et al., 2023, arXiv:2302.06675) with linear warmup and cosine decay, in JAX: optax's own
`lion`, the update of `torch.py` (θ ← θ(1 − ηλ) − η sign(β₁m + (1 − β₁)g), then m ← β₂m + (1 − β₂)g).

    python submit.py --framework jax --workload kjv_lm --submission lion
"""

from __future__ import annotations

import optax

from harness import spec
from harness.backends.jax.schedules import warmup_cosine_decay
from submissions.lion.common import SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return optax.lion(warmup_cosine_decay(hp.learning_rate, workload.step_hint, hp.warmup_factor),
                      b1=1.0 - hp.one_minus_beta1, b2=hp.beta2, weight_decay=hp.weight_decay)

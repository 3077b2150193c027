"""AdamW (Loshchilov & Hutter, 2019) with linear warmup and cosine decay, in JAX: optax's own `adamw`,
the same update as `torch.py`'s `torch.optim.AdamW` (θ <- θ − η_t (m̂ / (√v̂ + ε) + λ θ)).

    python submit.py --framework jax --workload fashion_mnist --submission adamw
"""

from __future__ import annotations

import optax

from harness import spec
from harness.backends.jax.schedules import warmup_cosine_decay
from submissions.adamw.common import EPSILON, SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    return optax.adamw(warmup_cosine_decay(hp.learning_rate, workload.step_hint, hp.warmup_factor),
                       b1=1.0 - hp.one_minus_beta1, b2=hp.beta2, eps=EPSILON, weight_decay=hp.weight_decay)

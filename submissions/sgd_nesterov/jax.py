"""SGD with Nesterov momentum and AlgoPerf's linear warmup and decay, in JAX: optax's own `sgd`
(nesterov), after L2 weight decay coupled to the gradient, as `torch.py`'s `torch.optim.SGD`.

    python submit.py --framework jax --workload fashion_mnist --submission sgd_nesterov
"""

from __future__ import annotations

import optax

from harness import spec
from harness.backends.jax.schedules import warmup_linear_decay
from submissions.sgd_nesterov.common import SELF_TUNING_DEFAULTS  # noqa: F401 - read by the harness


def make_optimizer(params, hyperparameters, workload: spec.Workload) -> optax.GradientTransformation:
    hp = hyperparameters or SELF_TUNING_DEFAULTS
    schedule = warmup_linear_decay(hp.learning_rate, workload.step_hint, hp.warmup_factor, hp.decay_steps_factor,
                                   hp.end_factor)
    return optax.chain(optax.add_decayed_weights(hp.weight_decay),
                       optax.sgd(schedule, momentum=1.0 - hp.one_minus_beta1, nesterov=True))

"""The sgd_nesterov submission's self-tuning point, shared by its torch and JAX versions."""

from __future__ import annotations

from harness import spec

# Self-tuning ruleset: lr 0.1, momentum 0.9, weight decay 1e-4 (He et al., 2016, ResNet training);
# warmup, decay length and end factor are feasible points of AlgoPerf's search space (search_space.json).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 0.1, "one_minus_beta1": 0.1, "weight_decay": 1e-4, "warmup_factor": 0.05,
    "decay_steps_factor": 0.9, "end_factor": 1e-2,
})

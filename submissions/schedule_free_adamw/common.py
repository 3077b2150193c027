"""Schedule-free AdamW's facts shared by its torch and JAX versions: the package's constants, the
self-tuning point and the warmup length."""

from __future__ import annotations

from harness import spec

EPSILON = 1e-8  # AdamWScheduleFree default
WEIGHT_LR_POWER = 2.0  # AdamWScheduleFree default: c_{t+1} ∝ γ_t²

# Self-tuning ruleset: the hyperparameters of the authors' AlgoPerf self-tuning submission
# (schedulefree/algoperf/self_tuning/schedule_free_adamw/submission.py, HPARAMS).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 0.0025, "one_minus_beta1": 0.1, "beta2": 0.9955159689799007,
    "weight_decay": 0.08121616522670176, "warmup_factor": 0.02, "r": 0.75, "label_smoothing": 0.2,
    "dropout_rate": 0.1,
})


def warmup_steps(hyperparameters: spec.Hyperparameters, step_hint: int) -> int:
    """The linear warmup's length: `warmup_factor` of step_hint, rounded down."""
    return int(hyperparameters.warmup_factor * step_hint)

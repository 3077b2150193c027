"""DoG's facts shared by its torch and JAX versions: the package's constants and the self-tuning point."""

from __future__ import annotations

from harness import spec

AVERAGING_GAMMA = 8.0  # dog.PolynomialDecayAverager default
RELATIVE_LEARNING_RATE = 1.0  # DoG's c, "changing it is not recommended" (dog.DoG docstring)
EPSILON = 1e-8  # dog.DoG default, added to Σ‖g‖²

# Self-tuning ruleset: DoG's defaults (weight decay 0); reps_rel is chosen per model (`self_tuning_point`).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({"weight_decay": 0.0})


def self_tuning_point(batch_norm: bool) -> spec.Hyperparameters:
    """SELF_TUNING_DEFAULTS with the reps_rel the package recommends: 1e-6, or 1e-4 for models with BatchNorm."""
    return spec.make_hyperparameters({**SELF_TUNING_DEFAULTS._asdict(), "reps_rel": 1e-4 if batch_norm else 1e-6})

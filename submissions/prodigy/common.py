"""Prodigy's facts shared by its torch and JAX versions: the base rate, prodigyopt's constants and the
self-tuning point."""

from __future__ import annotations

from harness import spec

LEARNING_RATE = 1.0  # "We recommend using lr=1. (default) for all networks" (prodigyopt README)
EPSILON = 1e-8  # prodigyopt's default
D0 = 1e-6  # prodigyopt's default initial estimate of d

# Self-tuning ruleset: Prodigy's defaults (β = (0.9, 0.999), weight decay 0, d_coef 1) and no warmup:
# plain cosine annealing, the README's scheduler.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 0.0, "d_coef": 1.0, "warmup_factor": 0.0,
})


def uses_safeguard_warmup(hyperparameters: spec.Hyperparameters) -> bool:
    """prodigyopt's `safeguard_warmup`, which its README advises with a linear warm-up."""
    return hyperparameters.warmup_factor > 0

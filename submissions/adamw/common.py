"""The AdamW baseline's facts shared by its torch and JAX versions: the self-tuning point and ε."""

from __future__ import annotations

from harness import spec

# Self-tuning ruleset: torch.optim.AdamW's defaults (lr 1e-3, betas (0.9, 0.999), weight decay 1e-2)
# with the warmup fraction of AlgoPerf's AdamW search space (search_space.json).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 1e-3, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 1e-2, "warmup_factor": 0.05,
})
EPSILON = 1e-8  # AlgoPerf's AdamW baseline

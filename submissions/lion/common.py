"""The lion submission's self-tuning point, shared by its torch and JAX versions."""

from __future__ import annotations

from harness import spec

# Self-tuning ruleset: the paper's β = (0.9, 0.99) and its advice of a learning rate 3-10x smaller and a
# weight decay 3-10x larger than AdamW's: AdamW's 1e-3 and 1e-2 (the adamw submission) give
# lr 1e-4 and weight decay 0.1; warmup 5% as in AlgoPerf's AdamW search space.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 1e-4, "one_minus_beta1": 0.1, "beta2": 0.99, "weight_decay": 0.1, "warmup_factor": 0.05,
})

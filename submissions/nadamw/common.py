"""The NAdamW baseline's facts shared by its torch and JAX versions: the self-tuning point and ε."""

from __future__ import annotations

from harness import spec

# Self-tuning ruleset: the fourth point of AlgoPerf's qualification search space (search_space.json),
# the point that brief tuning kept on fashion_mnist, kjv_lm, adult_ctr and mri_reconstruction and
# that set their targets (docs/targets.md), so the baseline under self-tuning is the tuned baseline.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 0.004958460849689891,
    "one_minus_beta1": 0.13625575743,
    "beta2": 0.6291854735396584,
    "weight_decay": 0.1147386261512052,
    "warmup_factor": 0.02,
    "label_smoothing": 0.0,
    "dropout_rate": 0.0,
})
EPSILON = 1e-8  # AlgoPerf's NAdamW baseline

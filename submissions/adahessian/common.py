"""The adahessian submission's facts shared by its torch and JAX versions: ε, the probes and the
self-tuning point."""

from __future__ import annotations

from harness import spec

EPSILON = 1e-4  # official Adahessian default (amirgholami/adahessian, image_classification/optim_adahessian.py)
PROBES = "rademacher"  # Yao et al. (2021); the official `get_trace`

# Self-tuning ruleset: the official CIFAR-10 ResNet recipe (image_classification/main.py): lr 0.15,
# β = (0.9, 0.999), Hessian power 1, weight decay 5e-4 applied decoupled as 5e-4 / lr (the script's
# own correction); warmup 5% as in AlgoPerf's AdamW search space (the official script uses step decay).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 0.15, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 5e-4 / 0.15,
    "hessian_power": 1.0, "warmup_factor": 0.05, "label_smoothing": 0.0, "dropout_rate": 0.0,
})

"""The sophia_h submission's facts shared by its torch and JAX versions: k, ε, the probes and the
self-tuning point."""

from __future__ import annotations

from harness import spec

HESSIAN_INTERVAL = 10  # k in Liu et al. (2023), Algorithm 3; pytorch-optimizer's SophiaH update_period
EPSILON = 1e-12  # ε of the official SophiaH (Liuhong99/Sophia sophia.py line 391 at c503211) and of pytorch-optimizer
PROBES = "gaussian"  # u ~ N(0, I) (Liu et al., 2023, Hutchinson estimator)

# Self-tuning ruleset: pytorch-optimizer's SophiaH defaults (lr 6e-2, p = ρ = 1e-2, β = (0.96, 0.99)),
# mapped to the official parameterisation lr = ρ · (their lr) = 6e-4; weight decay 0.1 and grad_clip 1.0
# of the official Sophia-G (sophia.py default, config/train_gpt2_small_sophiag.py); warmup 2% of the
# run, as in those configs.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 6e-4, "one_minus_beta1": 0.04, "beta2": 0.99, "rho": 0.01, "weight_decay": 0.1,
    "warmup_factor": 0.02, "grad_clip": 1.0, "label_smoothing": 0.0, "dropout_rate": 0.0,
})

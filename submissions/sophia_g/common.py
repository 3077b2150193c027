"""The sophia_g submission's facts shared by its torch and JAX versions: k, ε and the self-tuning point."""

from __future__ import annotations

from harness import spec

HESSIAN_INTERVAL = 10  # k: `interval = 10` (Liuhong99/Sophia configs, line 39; train_sophiag.py line 50)
EPSILON = 1e-15  # official sophia.py line 199

# Self-tuning ruleset, from the official repository Liuhong99/Sophia at a7e1572 (January 2024):
#   β = (0.965, 0.99), grad_clip 1.0, weight decay 0.2: every config/train_gpt2_*_sophiag.py (lines 30-33);
#     weight decay 0.2 is also the README's table ("Hyperparameters for GPT-2 models");
#   warmup 2% of the run: warmup_iters 2000 of max_iters 100000 in those configs (lines 19, 36);
#   ρ = 0.03: train_sophiag.py's default (line 49); until 6bfb0a0 (August 2023) also the 125M config's
#     value and the README's ("We choose rho = 0.03 in 125M Sophia-G"). Today's README table and
#     configs give 0.05 (125M, 770M) and 0.08 (355M);
#   lr "about the same as the learning rate that you would use for AdamW" (README), i.e. the AdamW
#     submission's 1e-3.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 1e-3, "one_minus_beta1": 0.035, "beta2": 0.99, "rho": 0.03, "weight_decay": 0.2,
    "warmup_factor": 0.02, "grad_clip": 1.0, "label_smoothing": 0.0, "dropout_rate": 0.0,
})

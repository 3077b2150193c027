"""D-Adaptation Adam's facts shared by its torch and JAX versions: the base rate, the `dadaptation`
package's constants and the self-tuning point."""

from __future__ import annotations

from harness import spec

LEARNING_RATE = 1.0  # "Set the LR parameter to 1.0" (dadaptation README)
EPSILON = 1e-8  # DAdaptAdam default
D0 = 1e-6  # DAdaptAdam's default initial estimate of d

# Self-tuning ruleset: DAdaptAdam's β = (0.9, 0.999); weight decay 1e-2, torch.optim.AdamW's default,
# since the README advises decoupled decay at the usual AdamW value or a few times more; warmup 5%
# as in AlgoPerf's AdamW search space ("use the same learning rate scheduler you would normally use").
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 1e-2, "warmup_factor": 0.05,
})

"""The ema submission's facts shared by its torch and JAX versions: the self-tuning point and the decay."""

from __future__ import annotations

from harness import spec
from submissions.nadamw.common import SELF_TUNING_DEFAULTS as NADAMW_DEFAULTS

# Self-tuning ruleset: NAdamW's (the nadamw submission's), with an averaging horizon of 5% of
# step_hint, the same window as the lawa submission's default (5 snapshots 1% apart); chosen here,
# not taken from a paper.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({**NADAMW_DEFAULTS._asdict(), "ema_horizon_factor": 0.05})


def decay(hyperparameters: spec.Hyperparameters, step_hint: int) -> float:
    """β = 1 − 1/(h · step_hint), at least 0: the average spans a fraction h of the run on every workload."""
    return max(0.0, 1.0 - 1.0 / (hyperparameters.ema_horizon_factor * step_hint))

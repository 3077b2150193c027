"""The lawa submission's facts shared by its torch and JAX versions: the self-tuning point and the interval."""

from __future__ import annotations

from harness import spec
from submissions.nadamw.common import SELF_TUNING_DEFAULTS as NADAMW_DEFAULTS

# Self-tuning ruleset: NAdamW's (the nadamw submission's), with k = 5 snapshots taken 1% of step_hint
# apart (a 5% window); chosen here, not taken from a paper (Kaddour snapshots once per epoch).
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    **NADAMW_DEFAULTS._asdict(), "lawa_queue_length": 5, "lawa_interval_factor": 0.01,
})


def interval(hyperparameters: spec.Hyperparameters, step_hint: int) -> int:
    """ν, the steps between snapshots: `lawa_interval_factor` of step_hint, at least 1."""
    return max(1, round(hyperparameters.lawa_interval_factor * step_hint))

"""SOAP's facts shared by its torch and JAX versions: the official code's constants and the self-tuning point."""

from __future__ import annotations

from harness import spec

EPSILON = 1e-8  # official SOAP default
MAX_PRECONDITIONER_DIM = 10_000  # official default: larger dimensions (vocabularies) stay unrotated
# The official code (nikhilvyas/SOAP soap.py at a1e5535) decomposes in float32: its statistics L_i are
# created in the default dtype, float32 (line 234), and `get_orthogonal_matrix` / `get_orthogonal_matrix_QR`
# cast any other dtype to float32 before eigh and QR (lines 346-368, 388-421).
DECOMPOSITION_DTYPE = "float32"
EIGH_SHIFT = 1e-30  # eigh of L + 1e-30 I (official `get_orthogonal_matrix`)

# Self-tuning ruleset: the official defaults (lr 3e-3, β = (0.95, 0.95), weight decay 0.01, eigenbasis
# refresh every 10 steps); warmup 5% as in AlgoPerf's AdamW search space.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 3e-3, "one_minus_beta1": 0.05, "beta2": 0.95, "weight_decay": 0.01,
    "precondition_frequency": 10, "warmup_factor": 0.05,
})


def preconditioned_dims(shape: tuple[int, ...]) -> list[int]:
    """The dimensions of a parameter that SOAP rotates: all of size at most MAX_PRECONDITIONER_DIM of a
    parameter with two or more; none of a vector (Adam)."""
    return [i for i, n in enumerate(shape) if n <= MAX_PRECONDITIONER_DIM] if len(shape) >= 2 else []

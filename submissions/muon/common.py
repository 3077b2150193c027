"""Muon's facts shared by its torch and JAX versions: the reference's constants, which parameters are
hidden matrices, the shape scale of their update, and the self-tuning point."""

from __future__ import annotations

import math

from harness import spec

NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # (a, b, c) of the reference's quintic iteration
NEWTON_SCHULZ_STEPS = 5  # reference default
NEWTON_SCHULZ_DTYPE = "bfloat16"  # the reference runs the iteration in bfloat16
ADAM_BETAS = (0.9, 0.95)  # reference MuonWithAuxAdam defaults for the AdamW groups
ADAM_EPSILON = 1e-10

# Self-tuning ruleset: the reference's defaults (Muon lr 0.02, momentum 0.95, weight decay 0; AdamW lr 3e-4,
# weight decay 0); warmup 5% as in AlgoPerf's AdamW search space.
SELF_TUNING_DEFAULTS = spec.make_hyperparameters({
    "learning_rate": 0.02, "one_minus_momentum": 0.05, "weight_decay": 0.0, "adam_learning_rate": 3e-4,
    "adam_weight_decay": 0.0, "warmup_factor": 0.05,
})


def is_hidden_matrix(ndim: int, parameter_type: spec.ParameterType, is_output: bool) -> bool:
    """Whether Muon updates a parameter: two or more dimensions, not an embedding, not the output layer."""
    return ndim >= 2 and parameter_type != spec.ParameterType.EMBEDDING and not is_output


def shape_scale(shape: tuple[int, ...]) -> float:
    r"""The factor √max(1, A/B) on a hidden tensor's orthogonalised update, `shape` in torch's layout.

    A matrix (rows, cols), as in the reference: A/B = rows/cols. A 4-D convolution kernel
    (out, in, k_h, k_w): A/B = k_h/k_w, as the reference's `muon_update` computes it (KellerJordan/Muon
    muon.py line 40 at 857d1ad: the sizes of the unflattened gradient, after line 38 has flattened only
    the copy it orthogonalises), i.e. 1 for square kernels. muon.py from 8f71d32 to 28c793b (November
    2024 to January 2025) scaled by the flattened matrix's out/(in·k_h·k_w) instead, which this
    submission used to follow; the CIFAR-10 example the reference's README links (cifar10-airbench
    airbench94_muon.py at 28bff5f, lines 83-85) has no shape scale at all. Other ranks (the 3-D kernels
    (out, in, k) of a Conv1d), which the reference's `zeropower_via_newtonschulz5` would orthogonalise
    slice by slice as a stack of (in, k) matrices, are orthogonalised here as the (out, in·k) matrix,
    as the reference's docstring says of convolution weights, and A/B is that matrix's rows/cols.
    """
    if len(shape) == 4:
        rows, cols = shape[-2], shape[-1]
    else:
        rows, cols = shape[0], math.prod(shape[1:])
    return math.sqrt(max(1.0, rows / cols))

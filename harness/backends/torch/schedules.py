"""AlgoPerf's baseline schedules (`harness/schedules.py`) as torch LambdaLR multipliers of the base rate."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from harness.schedules import WarmupCosineDecay, WarmupLinearDecay


def warmup_cosine_decay(optimizer: torch.optim.Optimizer, step_hint: int, warmup_factor: float) -> LambdaLR:
    """`WarmupCosineDecay`: linear warmup, then cosine decay to 0 at step_hint."""
    return LambdaLR(optimizer, WarmupCosineDecay.of(step_hint, warmup_factor).factor)


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer, step_hint: int, warmup_factor: float, decay_steps_factor: float,
    end_factor: float,
) -> LambdaLR:
    """`WarmupLinearDecay`: AlgoPerf's SGD schedule."""
    return LambdaLR(optimizer, WarmupLinearDecay.of(step_hint, warmup_factor, decay_steps_factor, end_factor).factor)

"""Learning-rate schedules of AlgoPerf's baselines, as torch LambdaLR multipliers of the base rate."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_decay(optimizer: torch.optim.Optimizer, step_hint: int, warmup_factor: float) -> LambdaLR:
    """Linear warmup over w = floor(warmup_factor * step_hint) steps, then cosine decay to 0 at step_hint:

        f(t) = t / w                                        for t < w
        f(t) = (1 + cos(pi * min(t - w, T) / T)) / 2,  T = step_hint - w,   afterwards (0 past step_hint)

    AlgoPerf's PyTorch baseline chains LinearLR and CosineAnnealingLR, whose cosine rises again past
    step_hint; like its JAX baseline (optax.cosine_decay_schedule) this one stays at 0.
    """
    warmup = int(warmup_factor * step_hint)
    decay = max(step_hint - warmup, 1)

    def factor(t: int) -> float:
        if t < warmup:
            return t / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(t - warmup, decay) / decay))

    return LambdaLR(optimizer, factor)


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer, step_hint: int, warmup_factor: float, decay_steps_factor: float,
    end_factor: float,
) -> LambdaLR:
    """AlgoPerf's SGD schedule: linear warmup over w steps, linear decay to `end_factor` at
    D = floor(decay_steps_factor * step_hint), then constant:

        f(t) = t / w  (t < w);   1 - (1 - end_factor) * min(t - w, D - w) / (D - w)  afterwards
    """
    warmup = int(warmup_factor * step_hint)
    decay = max(int(decay_steps_factor * step_hint) - warmup, 1)

    def factor(t: int) -> float:
        if t < warmup:
            return t / warmup
        return 1.0 - (1.0 - end_factor) * min(t - warmup, decay) / decay

    return LambdaLR(optimizer, factor)

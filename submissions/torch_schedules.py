"""Learning-rate schedules of AlgoPerf's PyTorch baselines, built from torch.optim.lr_scheduler."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

WARMUP_START_FACTOR = 1e-10  # AlgoPerf's pytorch_cosine_warmup starts its LinearLR warmup here


def warmup_cosine_decay(optimizer: torch.optim.Optimizer, step_hint: int, warmup_factor: float) -> LRScheduler:
    """Linear warmup over w = floor(warmup_factor * step_hint) steps, then cosine decay to 0 at step_hint.

    lr(t) = lr * t / w for t < w;  lr * (1 + cos(pi (t - w) / (step_hint - w))) / 2 afterwards.
    """
    warmup_steps = int(warmup_factor * step_hint)
    warmup = LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, end_factor=1.0, total_iters=warmup_steps)
    cosine = CosineAnnealingLR(optimizer, T_max=max(step_hint - warmup_steps, 1))
    return SequentialLR(optimizer, schedulers=[warmup, cosine], milestones=[warmup_steps])


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer, step_hint: int, warmup_factor: float, decay_steps_factor: float,
    end_factor: float,
) -> LRScheduler:
    """AlgoPerf's SGD schedule: linear warmup, linear decay to `end_factor * lr` at
    `decay_steps_factor * step_hint`, then constant."""
    warmup_steps = int(warmup_factor * step_hint)
    decay_steps = max(int(decay_steps_factor * step_hint) - warmup_steps, 1)
    warmup = LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, end_factor=1.0, total_iters=warmup_steps)
    decay = LinearLR(optimizer, start_factor=1.0, end_factor=end_factor, total_iters=decay_steps)
    constant = LinearLR(optimizer, start_factor=end_factor, end_factor=end_factor, total_iters=1)
    return SequentialLR(
        optimizer, schedulers=[warmup, decay, constant], milestones=[warmup_steps, warmup_steps + decay_steps]
    )

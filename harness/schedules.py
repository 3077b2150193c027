"""Learning-rate schedules of AlgoPerf's baselines, framework-free: the multiplier of the base rate at
step t (t = the number of updates made before this one). Each backend turns them into its own
idiom (`harness/backends/torch/schedules.py`: LambdaLR; `harness/backends/jax/schedules.py`: optax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosineDecay:
    """Linear warmup over w = floor(warmup_factor * step_hint) steps, then cosine decay to 0 at step_hint:

        f(t) = t / w                                        for t < w
        f(t) = (1 + cos(pi * min(t - w, T) / T)) / 2,  T = step_hint - w,   afterwards (0 past step_hint)

    AlgoPerf's PyTorch baseline chains LinearLR and CosineAnnealingLR, whose cosine rises again past
    step_hint; like its JAX baseline (optax.cosine_decay_schedule) this one stays at 0.
    """

    warmup: int
    decay: int

    @classmethod
    def of(cls, step_hint: int, warmup_factor: float) -> WarmupCosineDecay:
        warmup = int(warmup_factor * step_hint)
        return cls(warmup, max(step_hint - warmup, 1))

    def factor(self, t: int) -> float:
        if t < self.warmup:
            return t / self.warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(t - self.warmup, self.decay) / self.decay))


@dataclass(frozen=True)
class WarmupLinearDecay:
    """AlgoPerf's SGD schedule: linear warmup over w steps, linear decay to `end_factor` at
    D = floor(decay_steps_factor * step_hint), then constant:

        f(t) = t / w  (t < w);   1 - (1 - end_factor) * min(t - w, D - w) / (D - w)  afterwards
    """

    warmup: int
    decay: int
    end_factor: float

    @classmethod
    def of(cls, step_hint: int, warmup_factor: float, decay_steps_factor: float, end_factor: float) -> WarmupLinearDecay:
        warmup = int(warmup_factor * step_hint)
        return cls(warmup, max(int(decay_steps_factor * step_hint) - warmup, 1), end_factor)

    def factor(self, t: int) -> float:
        if t < self.warmup:
            return t / self.warmup
        return 1.0 - (1.0 - self.end_factor) * min(t - self.warmup, self.decay) / self.decay

"""AlgoPerf's baseline schedules (`harness/schedules.py`) as optax schedules of the learning rate."""

from __future__ import annotations

import optax

from harness.schedules import WarmupCosineDecay, WarmupLinearDecay


def warmup_cosine_decay(learning_rate: float, step_hint: int, warmup_factor: float) -> optax.Schedule:
    """learning_rate × `WarmupCosineDecay`: t / w for t < w, then (1 + cos(π min(t − w, T) / T)) / 2."""
    schedule = WarmupCosineDecay.of(step_hint, warmup_factor)
    warmup = optax.linear_schedule(0.0, learning_rate, max(schedule.warmup, 1))
    cosine = optax.cosine_decay_schedule(learning_rate, schedule.decay)
    return optax.join_schedules([warmup, cosine], [schedule.warmup])


def warmup_linear_decay(learning_rate: float, step_hint: int, warmup_factor: float, decay_steps_factor: float,
                        end_factor: float) -> optax.Schedule:
    """learning_rate × `WarmupLinearDecay`: AlgoPerf's SGD schedule."""
    schedule = WarmupLinearDecay.of(step_hint, warmup_factor, decay_steps_factor, end_factor)
    warmup = optax.linear_schedule(0.0, learning_rate, max(schedule.warmup, 1))
    decay = optax.linear_schedule(learning_rate, learning_rate * end_factor, schedule.decay)
    return optax.join_schedules([warmup, decay], [schedule.warmup])

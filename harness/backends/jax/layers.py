"""Flax pieces that reproduce PyTorch's layer defaults, for `jax.py` ports of `torch.py` models.

- `TORCH_KERNEL_INIT`: torch's default kernel initialisation of Linear and Conv layers,
  kaiming_uniform(a=√5), which is U(±1/√fan_in); `torch_bias_init(fan_in)`: their bias, likewise.
- `torch_layer_norm(epsilon)`: LayerNorm with the variance computed as torch does (mean of squared
  deviations, not E[x²] − E[x]²).
- `with_fused_attention_types`: AlgoPerf's types for a fused `qkv` and an `out` projection, as the torch
  backend's `FUSED_ATTENTION_PARAMETER_TYPES`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

from harness import spec

TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
FUSED_ATTENTION_PARAMETER_TYPES = {  # (module, parameter) -> type
    ("qkv", "kernel"): spec.ParameterType.ATTENTION_QKV, ("out", "kernel"): spec.ParameterType.ATTENTION_OUT,
    ("qkv", "bias"): spec.ParameterType.ATTENTION_BIAS, ("out", "bias"): spec.ParameterType.ATTENTION_BIAS,
}


def torch_bias_init(fan_in: int):
    """torch's Linear and Conv bias initialisation, U(±1/√fan_in)."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -1, 1) / jnp.sqrt(fan_in)


def torch_layer_norm(epsilon: float) -> partial:
    return partial(nn.LayerNorm, epsilon=epsilon, use_fast_variance=False)


def with_fused_attention_types(param_types: dict) -> dict:
    """The parameter-type tree with the `qkv` and `out` projections of attention modules retyped."""
    return jax.tree_util.tree_map_with_path(
        lambda path, kind: FUSED_ATTENTION_PARAMETER_TYPES.get(tuple(entry.key for entry in path[-2:]), kind),
        param_types)

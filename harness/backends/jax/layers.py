"""Flax pieces that reproduce PyTorch's layer defaults, for `jax.py` ports of `torch.py` models.

- `TORCH_KERNEL_INIT`: torch's default kernel initialisation of Linear and Conv layers,
  kaiming_uniform(a=√5), which is U(±1/√fan_in); `torch_bias_init(fan_in)`: their bias, likewise.
- `torch_layer_norm(epsilon)`: LayerNorm with the variance computed as torch does (mean of squared
  deviations, not E[x²] − E[x]²).
- `with_fused_attention_types`: AlgoPerf's types for a fused `qkv` and an `out` projection, as the torch
  backend's `FUSED_ATTENTION_PARAMETER_TYPES`.
- `with_encoder_decoder_types`: the same for encoder-decoder Transformers (`qkv`, `q`, `kv`, `out`
  projections; final LayerNorms `encoder_ln`, `decoder_ln`), as their torch modules type them.
- `dropout`: dropout whose rate comes with the call (AlgoPerf's `model_fn(dropout_rate=...)`).
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


ENCODER_DECODER_ATTENTION_TYPES = {"qkv": spec.ParameterType.ATTENTION_QKV, "q": spec.ParameterType.ATTENTION_Q,
                                   "kv": spec.ParameterType.ATTENTION_KV, "out": spec.ParameterType.ATTENTION_OUT}


def with_encoder_decoder_types(param_types: dict) -> dict:
    """The parameter-type tree with what the generic naming rule misses retyped: the attention projections
    (by module name) and the final LayerNorms `encoder_ln`, `decoder_ln`."""

    def retyped(path, kind: spec.ParameterType) -> spec.ParameterType:
        module, leaf = (entry.key for entry in path[-2:])
        if module in ("encoder_ln", "decoder_ln"):
            return spec.ParameterType.LAYER_NORM_SCALE if leaf == "scale" else spec.ParameterType.LAYER_NORM_BIAS
        return ENCODER_DECODER_ATTENTION_TYPES.get(module, kind)

    return jax.tree_util.tree_map_with_path(retyped, param_types)


def dropout(module: nn.Module, x, rate: float, train: bool):
    """Each unit zeroed with probability `rate`, the rest scaled by 1 / (1 − rate), in training only, with
    `module`'s "dropout" random stream (`nn.Dropout` fixes its rate when the module is built; here it comes
    with the call)."""
    if not train or rate == 0.0:
        return x
    return jnp.where(jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape), x / (1.0 - rate), 0.0)

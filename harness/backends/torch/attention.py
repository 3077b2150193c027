"""The attention of encoder-decoder Transformers shaped like AlgoPerf's wmt model
(algoperf/workloads/wmt/wmt_pytorch/models.py), shared by the bible_translation and wmt workloads.

- `xavier_linear(fan_in, fan_out, bias, parts)`: a Linear layer whose kernel is `parts` stacked
  (fan_out / parts × fan_in) kernels, each Xavier-uniform, U(±√(6 / (fan_in + fan_out / parts))); bias
  N(0, 1e-6²) (AlgoPerf's initialisers, applied to each projection of a fused one on its own).
- `EncoderDecoderAttention`: bias-free multi-head attention, self-attention with one fused projection
  `qkv`, attention over the encoder output with `q` and a fused `kv`; `out` joins the heads. As
  `harness.backends.jax.attention` (same module names, so one set of weights runs in both frameworks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness import spec


def xavier_linear(fan_in: int, fan_out: int, bias: bool, parts: int = 1) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    bound = math.sqrt(6.0 / (fan_in + fan_out // parts))
    nn.init.uniform_(layer.weight, -bound, bound)
    if bias:
        nn.init.normal_(layer.bias, std=1e-6)
    return layer


class EncoderDecoderAttention(nn.Module):
    """softmax(q kᵀ / √head_width + mask) v over `heads` heads, with projections without biases:
    self-attention (`cross=False`) projects x to queries, keys and values at once (`qkv`); attention
    over the encoder output (`cross=True`) projects the queries (`q`) and, once per encoder output, the
    keys and values (`kv`). Each part of a fused projection is Xavier-uniform on its own
    (`xavier_per_part`, AlgoPerf's wmt), or the projections are torch's default Linear layers, for the
    model to initialise. With `weight_dropout`, `dropout` (rate 0 until the model's dropout rate is set)
    drops attention weights in training."""

    def __init__(self, width: int, heads: int, cross: bool, weight_dropout: bool = False,
                 xavier_per_part: bool = True) -> None:
        super().__init__()
        self.heads = heads

        def projection(fan_in: int, fan_out: int, parts: int) -> nn.Linear:
            if xavier_per_part:
                return xavier_linear(fan_in, fan_out, False, parts)
            return nn.Linear(fan_in, fan_out, bias=False)

        T = spec.ParameterType
        if cross:
            self.q, self.kv = projection(width, width, 1), projection(width, 2 * width, 2)
            self.algoperf_parameter_types = {"q.weight": T.ATTENTION_Q, "kv.weight": T.ATTENTION_KV}
        else:
            self.qkv = projection(width, 3 * width, 3)
            self.algoperf_parameter_types = {"qkv.weight": T.ATTENTION_QKV}
        self.out = projection(width, width, 1)
        self.algoperf_parameter_types["out.weight"] = T.ATTENTION_OUT
        self.dropout = nn.Dropout(0.0) if weight_dropout else None

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, W) -> (B, heads, L, W / heads)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def self_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self._split(y) for y in self.qkv(x).chunk(3, dim=-1))

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self._split(self.q(x))

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(self._split(y) for y in self.kv(memory).chunk(2, dim=-1))

    def attend(self, q, k, v, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """The heads' attention outputs joined and projected, (B, L, W); `mask` is additive, `causal`
        hides later keys."""
        p = self.dropout.p if self.dropout is not None and self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out(y.transpose(1, 2).flatten(2))

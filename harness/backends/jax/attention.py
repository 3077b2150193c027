"""The attention of encoder-decoder Transformers shaped like AlgoPerf's wmt model, in Flax Linen, as
`harness.backends.torch.attention` (shared by the bible_translation and wmt workloads; same module
names, so one set of weights runs in both frameworks).

- `xavier_uniform_blocks(parts)`: a (fan_in, fan_out) kernel of `parts` side-by-side kernels, each
  Xavier-uniform, U(±√(6 / (fan_in + fan_out / parts))); `xavier_dense(features, use_bias, parts)`: a
  Dense layer with that kernel and N(0, 1e-6²) biases (AlgoPerf's initialisers).
- `EncoderDecoderAttention`: bias-free multi-head attention, self-attention with one fused projection
  `qkv`, attention over the encoder output with `q` and a fused `kv`; `out` joins the heads.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn


def xavier_uniform_blocks(parts: int):
    def init(key, shape, dtype=jnp.float32):
        bound = math.sqrt(6.0 / (shape[0] + shape[1] // parts))
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def xavier_dense(features: int, use_bias: bool, parts: int = 1) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, kernel_init=xavier_uniform_blocks(parts),
                    bias_init=nn.initializers.normal(1e-6))


class EncoderDecoderAttention(nn.Module):
    """softmax(q kᵀ / √head_width, keys where `mask` is False left out) v over `heads` heads, with
    projections without biases: self-attention (`cross=False`) projects x to queries, keys and values at
    once (`qkv`); attention over the encoder output (`cross=True`) projects the queries (`q`) and, once
    per encoder output, the keys and values (`kv`). Each part of a fused kernel is Xavier-uniform on its
    own (`xavier_per_part`, AlgoPerf's wmt) or the fused kernel as one."""

    width: int
    heads: int
    cross: bool
    xavier_per_part: bool = True

    def setup(self) -> None:
        def projection(features: int, parts: int) -> nn.Dense:
            if self.xavier_per_part:
                return xavier_dense(features, False, parts)
            return nn.Dense(features, use_bias=False, kernel_init=nn.initializers.xavier_uniform())

        if self.cross:
            self.q, self.kv = projection(self.width, 1), projection(2 * self.width, 2)
        else:
            self.qkv = projection(3 * self.width, 3)
        self.out = projection(self.width, 1)

    def _split(self, y, parts: int) -> tuple:
        """(B, L, parts · width) -> `parts` arrays (B, L, heads, width / heads)."""
        y = y.reshape(*y.shape[:2], parts, self.heads, self.width // self.heads)
        return tuple(y[:, :, i] for i in range(parts))

    def self_qkv(self, x) -> tuple:
        return self._split(self.qkv(x), 3)

    def query(self, x):
        return self._split(self.q(x), 1)[0]

    def memory_kv(self, memory) -> tuple:
        return self._split(self.kv(memory), 2)

    def attend(self, q, k, v, mask, train: bool = False, rate: float = 0.0):
        """The heads' attention outputs joined and projected, (B, L, width); in training with `rate` > 0,
        each attention weight dropped with probability `rate` (the "dropout" random stream)."""
        rng = self.make_rng("dropout") if train and rate > 0.0 else None
        y = nn.dot_product_attention(q, k, v, mask=mask, broadcast_dropout=False, dropout_rng=rng, dropout_rate=rate,
                                     deterministic=rng is None)
        return self.out(y.reshape(*y.shape[:2], self.width))

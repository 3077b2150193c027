"""Fashion-MNIST with the small ViT of `torch.py` in Flax Linen: the same layers, shapes and initial
distributions (attention and MLP kernels Xavier-uniform, attention biases 0, MLP biases N(0, 1e-6²),
the patch embedding and pre-logits torch's defaults U(±1/√fan_in), a zero head; LayerNorm ε 1e-6 with
the variance computed as torch does; tanh-approximate GELU; attention scaled by 1/√head_width as
`F.scaled_dot_product_attention`), the same fixed sin-cos position embeddings, and dropout (rate 0
unless `dropout_rate` says otherwise) at the same places; only the dropout masks, drawn from JAX's
keys, differ from torch's. Images arrive as (N, 1, 28, 28) and are laid out NHWC inside the model.

    python submit.py --framework jax --workload fashion_mnist_vit --submission nadamw
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

from harness import spec
from harness.backends.jax.layers import TORCH_KERNEL_INIT, torch_bias_init, torch_layer_norm, with_fused_attention_types
from workloads.fashion_mnist import jax as fashion_mnist_jax
from workloads.fashion_mnist_vit.workload import FashionMnistVitWorkload

NUM_CLASSES = 10
layer_norm = torch_layer_norm(1e-6)


def posemb_sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> jax.Array:
    """(height * width, dim) embeddings: sin/cos of x and of y at dim // 4 geometric frequencies."""
    y, x = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    omega = 1.0 / temperature ** (jnp.arange(dim // 4) / (dim // 4 - 1))
    y, x = y.reshape(-1, 1) * omega, x.reshape(-1, 1) * omega
    return jnp.concatenate((jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)), axis=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused query/key/value projections."""

    heads: int

    @nn.compact
    def __call__(self, x):
        batch, length, width = x.shape
        dense = partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.zeros)
        qkv = dense(3 * width, name="qkv")(x).reshape(batch, length, 3, self.heads, width // self.heads)
        y = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return dense(width, name="out")(y.reshape(batch, length, width))


class Block(nn.Module):
    """x + dropout(attention(LN(x))), then x + dropout(MLP(LN(x))); `mlp_0`, `mlp_3` are torch's `mlp.0`, `mlp.3`."""

    heads: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        dense = partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform(),
                        bias_init=nn.initializers.normal(stddev=1e-6))
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = x + dropout(SelfAttention(self.heads, name="attention")(layer_norm(name="ln1")(x)))
        y = nn.gelu(dense(4 * x.shape[-1], name="mlp_0")(layer_norm(name="ln2")(x)), approximate=True)
        return x + dropout(dense(x.shape[-1], name="mlp_3")(dropout(y)))


class SmallViT(nn.Module):
    patch: int = 7
    width: int = 64
    depth: int = 4
    heads: int = 4

    @nn.compact
    def __call__(self, images, train: bool, dropout_rate=None):
        rate = 0.0 if dropout_rate is None else dropout_rate
        x = nn.Conv(self.width, (self.patch, self.patch), self.patch, "VALID", kernel_init=TORCH_KERNEL_INIT,
                    bias_init=torch_bias_init(images.shape[1] * self.patch ** 2), name="patch_embedding")(
            jnp.transpose(images, (0, 2, 3, 1)))
        position_embedding = posemb_sincos_2d(*x.shape[1:3], self.width)
        x = nn.Dropout(rate, deterministic=not train)(x.reshape(len(x), -1, self.width) + position_embedding)
        for i in range(self.depth):
            x = Block(self.heads, rate, name=f"blocks_{i}")(x, train)
        x = layer_norm(name="ln")(x).mean(axis=1)
        x = jnp.tanh(nn.Dense(self.width, kernel_init=TORCH_KERNEL_INIT, bias_init=torch_bias_init(self.width),
                              name="pre_logits")(x))
        return nn.Dense(NUM_CLASSES, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                        name="head")(x)


class Workload(FashionMnistVitWorkload, fashion_mnist_jax.Workload):
    """The ResNet workload's evaluation and data with the ViT in place of the ResNet."""

    def build_model(self) -> nn.Module:
        return SmallViT()

    def init_model_fn(self, rng: spec.RandomState):
        params, model_state = super().init_model_fn(rng)
        self._param_types = with_fused_attention_types(self._param_types)
        return params, model_state

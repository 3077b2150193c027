"""The byte-level GPT of `torch.py` in Flax Linen: the same layers, shapes and initial distributions
(embeddings N(0, 1); dense kernels and biases torch's defaults U(±1/√fan_in); LayerNorm ε 1e-5 with
the variance computed as torch does; exact GELU; causal attention scaled by 1/√head_width as
`F.scaled_dot_product_attention`), and dropout (rate 0 unless `dropout_rate` says otherwise) at the
same places; only the dropout masks, drawn from JAX's keys, differ from torch's.

    python submit.py --framework jax --workload kjv_lm --submission nadamw
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

from harness import spec
from harness.backends.jax.layers import TORCH_KERNEL_INIT, torch_bias_init, torch_layer_norm, with_fused_attention_types
from harness.backends.jax.workload import JaxWorkload
from workloads.kjv_lm.workload import SEQUENCE_LENGTH, VOCABULARY_SIZE, KjvLmWorkload

layer_norm = torch_layer_norm(1e-5)
embedding = partial(nn.Embed, embedding_init=nn.initializers.normal(stddev=1.0))


def dense(features: int, fan_in: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=TORCH_KERNEL_INIT, bias_init=torch_bias_init(fan_in), name=name)


class CausalSelfAttention(nn.Module):
    heads: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        batch, length, width = x.shape
        qkv = dense(3 * width, width, "qkv")(x).reshape(batch, length, 3, self.heads, width // self.heads)
        y = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], is_causal=True)
        y = dense(width, width, "out")(y.reshape(batch, length, width))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)); `mlp_0`, `mlp_2` are torch's `mlp.0`, `mlp.2`."""

    heads: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        width = x.shape[-1]
        x = x + CausalSelfAttention(self.heads, self.dropout_rate, name="attention")(layer_norm(name="ln1")(x), train)
        y = nn.gelu(dense(4 * width, width, "mlp_0")(layer_norm(name="ln2")(x)), approximate=False)
        return x + nn.Dropout(self.dropout_rate, deterministic=not train)(dense(width, 4 * width, "mlp_2")(y))


class ByteGPT(nn.Module):
    width: int = 128
    depth: int = 2
    heads: int = 4

    @nn.compact
    def __call__(self, tokens, train: bool, dropout_rate=None):
        rate = 0.0 if dropout_rate is None else dropout_rate
        positions = jnp.arange(tokens.shape[1])
        x = (embedding(VOCABULARY_SIZE, self.width, name="token_embedding")(tokens)
             + embedding(SEQUENCE_LENGTH, self.width, name="position_embedding")(positions))
        x = nn.Dropout(rate, deterministic=not train)(x)
        for i in range(self.depth):
            x = Block(self.heads, rate, name=f"blocks_{i}")(x, train)
        return dense(VOCABULARY_SIZE, self.width, "head")(layer_norm(name="ln")(x))


class Workload(KjvLmWorkload, JaxWorkload):
    def build_model(self) -> nn.Module:
        return ByteGPT()

    def init_model_fn(self, rng: spec.RandomState):
        params, model_state = super().init_model_fn(rng)
        self._param_types = with_fused_attention_types(self._param_types)
        return params, model_state

    def eval_sums(self, logits, batch) -> dict:
        targets = batch["targets"]
        logp = jax.nn.log_softmax(logits.reshape(-1, logits.shape[-1]), axis=-1)
        return {"loss": -jnp.take_along_axis(logp, targets.reshape(-1, 1), axis=-1).sum(),
                "count": jnp.asarray(float(targets.size))}

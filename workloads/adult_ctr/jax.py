"""Adult CTR with the DLRM-small of `torch.py` in Flax Linen: the same layers, shapes and initial
distributions (embeddings U[0, 1/√vocabulary], bottom kernels Glorot-uniform, top and head kernels
N(0, 2 / (fan_in + fan_out)), biases N(0, 1 / fan_out)), the same dot interaction (upper triangle
with the diagonal, row-major) and the same dropout before the head (rate 0 unless `dropout_rate`
says otherwise; only its masks, drawn from JAX's keys, differ from torch's).

    python submit.py --framework jax --workload adult_ctr --submission nadamw
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from harness.backends.jax.workload import JaxWorkload
from workloads.adult_ctr.data import NUM_DENSE, NUM_SPARSE, VOCABULARY_SIZE
from workloads.adult_ctr.workload import AdultCtrWorkload

EMBED_DIM = 128
BOTTOM_DIMS = (512, 256, EMBED_DIM)
TOP_DIMS = (1024, 1024, 512, 256)  # then the 1-unit head

TOP_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")  # std √(2/(in+out))


def embedding_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, 0.0, 1.0 / math.sqrt(VOCABULARY_SIZE))


def dense(features: int, kernel_init, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=kernel_init, bias_init=nn.initializers.normal(math.sqrt(1.0 / features)),
                    name=name)


class DlrmSmall(nn.Module):
    """`bottom_mlp_{0,2,4}`, `top_mlp_{0,2,4,6}` are torch's `bottom_mlp.0`, ..., `top_mlp.6`."""

    embed_dim: int = EMBED_DIM
    bottom_dims: tuple[int, ...] = BOTTOM_DIMS
    top_dims: tuple[int, ...] = TOP_DIMS

    @nn.compact
    def __call__(self, inputs, train: bool, dropout_rate=None):
        """(batch, NUM_DENSE + NUM_SPARSE) float rows [dense, row ids] -> (batch,) logits."""
        if self.bottom_dims[-1] != self.embed_dim:
            raise ValueError(f"the bottom MLP must end at the embedding width {self.embed_dim}, "
                             f"not {self.bottom_dims[-1]}")
        bottom = inputs[:, :NUM_DENSE]
        for i, dim in enumerate(self.bottom_dims):
            bottom = nn.relu(dense(dim, nn.initializers.xavier_uniform(), f"bottom_mlp_{2 * i}")(bottom))
        embedded = nn.Embed(VOCABULARY_SIZE, self.embed_dim, embedding_init=embedding_init, name="embedding")(
            inputs[:, NUM_DENSE:].astype(jnp.int32))
        vectors = jnp.concatenate([bottom[:, None], embedded], axis=1)
        rows, cols = np.triu_indices(NUM_SPARSE + 1)
        products = jnp.einsum("bid,bjd->bij", vectors, vectors)[:, rows, cols]
        x = jnp.concatenate([bottom, products], axis=1)
        for i, dim in enumerate(self.top_dims):
            x = nn.relu(dense(dim, TOP_KERNEL_INIT, f"top_mlp_{2 * i}")(x))
        x = nn.Dropout(0.0 if dropout_rate is None else dropout_rate, deterministic=not train)(x)
        return dense(1, TOP_KERNEL_INIT, "head")(x)[:, 0]


class Workload(AdultCtrWorkload, JaxWorkload):
    def build_model(self) -> nn.Module:
        return DlrmSmall()

    def eval_sums(self, logits, batch) -> dict:
        targets = batch["targets"]
        return {
            "loss": optax.sigmoid_binary_cross_entropy(logits, targets).sum(),
            "errors": ((logits > 0) != (targets > 0.5)).sum(),
            "count": jnp.asarray(float(len(targets))),
        }

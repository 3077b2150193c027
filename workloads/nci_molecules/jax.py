"""The graph network of `torch.py` in Flax Linen: the same layers, shapes and initial distributions
(one Xavier-uniform embedding table per feature kind, its rows summed over the features; edge, node
and global MLPs of Dense -> LayerNorm -> ReLU -> Dropout with truncated-normal LeCun kernels and zero
biases, LayerNorm ε 1e-6 with the variance computed as torch does; zero initial globals; a LeCun
head), sum aggregation by `jax.ops.segment_sum`, and dropout 0.1 unless `dropout_rate` says
otherwise; only the dropout masks, drawn from JAX's keys, differ from torch's.

Static shapes: `jax.jit` compiles a step once per batch shape, and a batch's node and edge counts
vary. Each batch is padded (`pad_graphs`) to sizes of four per doubling (`padded_size`, under 25 %
padding), edges to twice the nodes: the added nodes and edges belong to the first added graph, the
added edges join the first added node to itself, and `weights` masks the added graphs out of the loss
and the metrics, so the real graphs' outputs are those of the unpadded batch. On the bundled data,
training batches of 128 graphs (1,845-2,409 nodes, 3,768-4,974 edges) take two shapes, 160 graphs
with 2,048 or 2,560 nodes (13 % and 87 % of the batches; 18 % padding on average): a trial compiles
its training step twice. Evaluation batches of 256 and 243 graphs take four shapes over the three
splits (untimed).

    python submit.py --framework jax --workload nci_molecules --submission nadamw
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from harness.backends.jax.layers import torch_layer_norm
from harness.backends.jax.workload import JaxWorkload
from workloads.nci_molecules.workload import (ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, DROPOUT_RATE, LATENT_DIM,
                                              NUM_MESSAGE_PASSING_STEPS, Graphs, NciMoleculesWorkload)

layer_norm = torch_layer_norm(1e-6)
dense = partial(nn.Dense, kernel_init=nn.initializers.lecun_normal())  # AlgoPerf's pytorch_default_init; bias 0


@jax.tree_util.register_static
class StaticInt(int):
    """An int that `jax.jit` takes as part of its argument's structure (compiling once per value), not
    as a traced leaf."""


def padded_size(n: int) -> int:
    """The least size ≥ n among 0..7 and m·2^k (m = 4..7, k ≥ 1): four sizes per doubling, under 25 % padding."""
    step = 1 << max(0, n.bit_length() - 3)
    return -(-n // step) * step


def pad_graphs(batch: dict[str, Any]) -> dict[str, Any]:
    """`graph_batch`'s batch with at least one node and one graph added, padded: graphs to a
    `padded_size`, nodes to the least `padded_size` P with room for the edges in 2P, edges to 2P (an OGB
    molecule has two edges per bond and about one bond per atom: one size for both makes fewer shapes
    than two). The added nodes and edges belong to graph `num_graphs` (the first added), the added edges
    join node `len(nodes)` (the first added) to itself, added features and targets are 0. `weights`
    (graphs, tasks) is 1 for the real graphs' labels, 0 for the added ones. Indices int32, JAX's default
    integer; `num_graphs` stays the real count."""
    graphs, targets = batch["inputs"], batch["targets"]
    real_nodes, real_edges, real_graphs = len(graphs.nodes), len(graphs.edges), graphs.num_graphs
    nodes = max(padded_size(real_nodes + 1), padded_size(-(-real_edges // 2)))
    edges, rows = 2 * nodes, padded_size(real_graphs + 1)

    def pad(array: np.ndarray, size: int, value: int = 0) -> np.ndarray:
        widths = [(0, size - len(array))] + [(0, 0)] * (array.ndim - 1)
        return np.pad(array.astype(np.int32), widths, constant_values=value)

    padded = Graphs(
        nodes=pad(graphs.nodes, nodes),
        edges=pad(graphs.edges, edges),
        senders=pad(graphs.senders, edges, real_nodes),
        receivers=pad(graphs.receivers, edges, real_nodes),
        node_graph=pad(graphs.node_graph, nodes, real_graphs),
        edge_graph=pad(graphs.edge_graph, edges, real_graphs),
        num_graphs=real_graphs,
    )
    weights = np.zeros((rows, targets.shape[1]), np.float32)
    weights[:real_graphs] = 1
    return {"inputs": padded, "targets": np.pad(targets, ((0, rows - real_graphs), (0, 0))), "weights": weights}


class Mlp(nn.Module):
    """AlgoPerf ogbg's `_make_mlp` with one hidden size: Dense, LayerNorm, ReLU, Dropout."""

    features: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(layer_norm(name="ln")(dense(self.features, name="dense")(x)))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class FeatureEmbedding(nn.Module):
    """Sum over categorical features of a learned row per (feature, value), from one table
    (Xavier-uniform, as OGB's AtomEncoder)."""

    vocabulary_sizes: tuple[int, ...]
    features: int

    @nn.compact
    def __call__(self, values):
        offsets = np.cumsum((0, *self.vocabulary_sizes[:-1]), dtype=np.int32)
        table = nn.Embed(sum(self.vocabulary_sizes), self.features, embedding_init=nn.initializers.xavier_uniform(),
                         name="table")
        return table(values + offsets).sum(axis=1)


class GraphNetwork(nn.Module):
    """One message-passing step: edge, node and global updates with sum aggregation; `graphs.num_graphs`
    (static) graphs."""

    features: int
    dropout_rate: float

    @nn.compact
    def __call__(self, graphs: Graphs, nodes, edges, globals_, train: bool):
        mlp = partial(Mlp, self.features, self.dropout_rate)
        edges = mlp(name="edge_mlp")(jnp.concatenate(
            [edges, nodes[graphs.senders], nodes[graphs.receivers], globals_[graphs.edge_graph]], axis=1), train)
        sum_by = partial(jax.ops.segment_sum, num_segments=len(nodes))
        nodes = mlp(name="node_mlp")(jnp.concatenate(
            [nodes, sum_by(edges, graphs.senders), sum_by(edges, graphs.receivers), globals_[graphs.node_graph]],
            axis=1), train)
        sum_by = partial(jax.ops.segment_sum, num_segments=graphs.num_graphs)
        globals_ = mlp(name="global_mlp")(jnp.concatenate(
            [sum_by(nodes, graphs.node_graph), sum_by(edges, graphs.edge_graph), globals_], axis=1), train)
        return nodes, edges, globals_


class GNN(nn.Module):
    """(graphs) -> (graphs.num_graphs, num_tasks) logits; under `jax.jit`, `num_graphs` must be static
    (a `StaticInt`)."""

    num_tasks: int
    latent_dim: int = LATENT_DIM
    steps: int = NUM_MESSAGE_PASSING_STEPS

    @nn.compact
    def __call__(self, graphs: Graphs, train: bool, dropout_rate=None):
        rate = DROPOUT_RATE if dropout_rate is None else dropout_rate
        nodes = FeatureEmbedding(ATOM_FEATURE_DIMS, self.latent_dim, name="atom_embedding")(graphs.nodes)
        edges = FeatureEmbedding(BOND_FEATURE_DIMS, self.latent_dim, name="bond_embedding")(graphs.edges)
        globals_ = jnp.zeros((graphs.num_graphs, self.num_tasks), nodes.dtype)
        for i in range(self.steps):
            nodes, edges, globals_ = GraphNetwork(self.latent_dim, rate, name=f"steps_{i}")(
                graphs, nodes, edges, globals_, train)
        return dense(self.num_tasks, name="head")(globals_)


class Workload(NciMoleculesWorkload, JaxWorkload):
    def build_model(self) -> nn.Module:
        return GNN(num_tasks=self.host_split("train")["targets"].shape[1])

    def host_batch(self, split: str, index) -> dict[str, Any]:
        """The graphs `index`, whole, padded to a bounded set of shapes (`pad_graphs`)."""
        return pad_graphs(super().host_batch(split, index))

    def model_inputs(self, batch: dict):
        """The graphs with `num_graphs` the padded count (the targets' rows) as a `StaticInt`: the model's
        shapes depend on it, and `jax.jit` traces the batch's own (the real count, a Python int)."""
        return batch["inputs"]._replace(num_graphs=StaticInt(len(batch["targets"])))

    def eval_batch_sums(self, split, params, model_state, rng, batch) -> dict:
        """The compiled evaluation's sums, with the logits and labels of the real graphs only."""
        sums = super().eval_batch_sums(split, params, model_state, rng, batch)
        real = batch["inputs"].num_graphs
        return {**sums, "logits": sums["logits"][:real], "labels": sums["labels"][:real]}

    def eval_sums(self, logits, batch) -> dict:
        """Summed loss, correct labels and label count of the real graphs (`weights`); all graphs'
        logits and labels, of which `eval_batch_sums` keeps the real ones."""
        targets, weights = batch["targets"], batch["weights"]
        return {
            "loss": self.loss_fn(targets, logits, weights)["summed"],
            "correct": (((logits > 0) == (targets > 0.5)) * weights).sum(),
            "count": weights.sum(),
            "logits": logits,
            "labels": targets,
        }

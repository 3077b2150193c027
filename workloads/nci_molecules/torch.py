"""A graph network (Battaglia et al., 2018, arXiv:1806.01261, Algorithm 1) shaped like AlgoPerf's
ogbg model (mlcommons/algorithmic-efficiency, `workloads/ogbg/ogbg_pytorch/models.py`, ported from
init2winit's GNN), scaled down and in plain torch:

- atom and bond embeddings: one embedding row per value of each OGB categorical feature, summed
  over the features (OGB's AtomEncoder/BondEncoder; AlgoPerf feeds the raw features to a Linear);
- globals start as zeros of width `num_tasks`, as in AlgoPerf;
- each message-passing step updates edges from [edge, sender, receiver, global], nodes from
  [node, sum of sent edges, sum of received edges, global], and globals from [sum of nodes, sum
  of edges, global], each with an MLP of Linear -> LayerNorm -> ReLU -> Dropout; no weight sharing;
- the logits are a Linear map of the final globals.

Batches hold whole graphs: `inputs` is a `Graphs` tuple (`workload.py`), `targets` a (graphs, tasks)
float array.

    python submit.py --workload nci_molecules --submission nadamw
"""

from __future__ import annotations

import math
import numpy as np
import torch
from torch import nn

from harness.backends.torch.workload import TorchWorkload
from workloads.nci_molecules.workload import (ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, DROPOUT_RATE, LATENT_DIM,
                                              NUM_MESSAGE_PASSING_STEPS, Graphs, NciMoleculesWorkload)


def lecun_normal_(layer: nn.Linear) -> None:
    """AlgoPerf's `init_utils.pytorch_default_init`: truncated-normal LeCun weights, zero bias."""
    std = math.sqrt(1.0 / layer.in_features) / 0.87962566103423978  # std of N(0,1) truncated at +-2
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """AlgoPerf ogbg's `_make_mlp` with one hidden size: Linear, LayerNorm(eps 1e-6), ReLU, Dropout."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim, eps=1e-6), nn.ReLU(),
                         nn.Dropout(DROPOUT_RATE))


class FeatureEmbedding(nn.Module):
    """Sum over categorical features of a learned row per (feature, value), from one table."""

    def __init__(self, vocabulary_sizes: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor((0, *np.cumsum(vocabulary_sizes)[:-1])), persistent=False)
        self.table = nn.Embedding(sum(vocabulary_sizes), dim)
        nn.init.xavier_uniform_(self.table.weight)  # as OGB's AtomEncoder

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.table(features + self.offsets).sum(dim=1)


def _sum_by(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    return values.new_zeros(size, values.shape[1]).index_add_(0, index, values)


class GraphNetwork(nn.Module):
    """One message-passing step: edge, node and global updates with sum aggregation."""

    def __init__(self, node_dim: int, edge_dim: int, global_dim: int, out_dim: int) -> None:
        super().__init__()
        self.edge_mlp = mlp(edge_dim + 2 * node_dim + global_dim, out_dim)
        self.node_mlp = mlp(node_dim + 2 * out_dim + global_dim, out_dim)
        self.global_mlp = mlp(2 * out_dim + global_dim, out_dim)

    def forward(self, graphs: Graphs, nodes, edges, globals_):
        edges = self.edge_mlp(torch.cat(
            [edges, nodes[graphs.senders], nodes[graphs.receivers], globals_[graphs.edge_graph]], dim=1))
        n = len(nodes)
        nodes = self.node_mlp(torch.cat(
            [nodes, _sum_by(graphs.senders, edges, n), _sum_by(graphs.receivers, edges, n),
             globals_[graphs.node_graph]], dim=1))
        globals_ = self.global_mlp(torch.cat(
            [_sum_by(graphs.node_graph, nodes, graphs.num_graphs), _sum_by(graphs.edge_graph, edges, graphs.num_graphs),
             globals_], dim=1))
        return nodes, edges, globals_


class GNN(nn.Module):
    def __init__(self, num_tasks: int, latent_dim: int = LATENT_DIM, steps: int = NUM_MESSAGE_PASSING_STEPS) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.atom_embedding = FeatureEmbedding(ATOM_FEATURE_DIMS, latent_dim)
        self.bond_embedding = FeatureEmbedding(BOND_FEATURE_DIMS, latent_dim)
        self.steps = nn.ModuleList(
            GraphNetwork(latent_dim, latent_dim, num_tasks if i == 0 else latent_dim, latent_dim) for i in range(steps)
        )
        self.head = nn.Linear(latent_dim, num_tasks)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                lecun_normal_(module)

    def forward(self, graphs: Graphs) -> torch.Tensor:
        nodes, edges = self.atom_embedding(graphs.nodes), self.bond_embedding(graphs.edges)
        globals_ = nodes.new_zeros(graphs.num_graphs, self.num_tasks)
        for step in self.steps:
            nodes, edges, globals_ = step(graphs, nodes, edges, globals_)
        return self.head(globals_)


class Workload(NciMoleculesWorkload, TorchWorkload):
    def build_model(self) -> nn.Module:
        return GNN(num_tasks=self.host_split("train")["targets"].shape[1])

    def eval_sums(self, logits: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Summed loss, correct labels and label count; the logits and labels themselves, which the
        evaluation concatenates over the split for mean average precision."""
        targets = batch["targets"]
        return {
            "loss": self.loss_fn(targets, logits)["summed"],
            "correct": ((logits > 0) == (targets > 0.5)).sum(),
            "count": torch.tensor(float(targets.numel())),
            "logits": logits,
            "labels": targets,
        }

"""DLRM-small (Naumov et al., 2019), shaped like AlgoPerf's criteo1tb `DlrmSmall`, scaled down.

A bottom MLP maps the dense features to the embedding width; each sparse feature's row of one shared
embedding table is looked up; the pairwise dot products of those vectors (upper triangle with the
diagonal, as AlgoPerf's `DotInteract`) are concatenated to the bottom MLP's output and fed to a top
MLP that ends in one logit. The widths are AlgoPerf's: 128-wide embeddings, bottom (512, 256, 128) and
top (1024, 1024, 512, 256, 1); only the embedding table is smaller (12 x 1,024 hashed rows, where
criteo1tb has 26 features and 4,194,304 rows). Initialisation follows AlgoPerf:
embeddings uniform in [0, 1/sqrt(vocabulary)], bottom weights Glorot-uniform, top weights normal
with std sqrt(2 / (fan_in + fan_out)), biases normal with std sqrt(1 / fan_out).

    python submit.py --workload adult_ctr --submission nadamw
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.torch.workload import TorchWorkload
from workloads.adult_ctr.data import NUM_DENSE, NUM_SPARSE, VOCABULARY_SIZE
from workloads.adult_ctr.workload import AdultCtrWorkload

# AlgoPerf criteo1tb's widths. At 1/8 of them (16; (64, 32, 16); (128, 128, 64, 32)) a step took 33 ms
# and the seeds' steps to target spread with a coefficient of variation of 0.26 (72 and 122); at these
# widths four of five seeds met the target at steps 40, 45, 45 and 45 (CV 0.06; docs/targets.md).
EMBED_DIM = 128
BOTTOM_DIMS = (512, 256, EMBED_DIM)
TOP_DIMS = (1024, 1024, 512, 256)  # then the 1-unit head


def _init_bias(layer: nn.Linear) -> None:
    nn.init.normal_(layer.bias, 0.0, math.sqrt(1.0 / layer.out_features))


class DotInteract(nn.Module):
    """All pairwise dot products (i <= j) of the (batch, features, width) vectors, flattened."""

    def __init__(self, num_vectors: int) -> None:
        super().__init__()
        self.register_buffer("triu", torch.triu_indices(num_vectors, num_vectors), persistent=False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        products = torch.bmm(vectors, vectors.transpose(1, 2))
        return products[:, self.triu[0], self.triu[1]]


class DlrmSmall(nn.Module):
    def __init__(self, embed_dim: int = EMBED_DIM, bottom_dims: tuple[int, ...] = BOTTOM_DIMS,
                 top_dims: tuple[int, ...] = TOP_DIMS) -> None:
        super().__init__()
        if bottom_dims[-1] != embed_dim:
            raise ValueError(f"the bottom MLP must end at the embedding width {embed_dim}, not {bottom_dims[-1]}")
        self.embedding = nn.Embedding(VOCABULARY_SIZE, embed_dim)
        nn.init.uniform_(self.embedding.weight, 0.0, 1.0 / math.sqrt(VOCABULARY_SIZE))
        layers, width = [], NUM_DENSE
        for dim in bottom_dims:
            layer = nn.Linear(width, dim)
            nn.init.xavier_uniform_(layer.weight)
            _init_bias(layer)
            layers += [layer, nn.ReLU()]
            width = dim
        self.bottom_mlp = nn.Sequential(*layers)
        self.interact = DotInteract(NUM_SPARSE + 1)
        layers, width = [], embed_dim + (NUM_SPARSE + 1) * (NUM_SPARSE + 2) // 2
        for dim in top_dims:
            layers += [nn.Linear(width, dim), nn.ReLU()]
            width = dim
        self.top_mlp = nn.Sequential(*layers, nn.Dropout(0.0))
        self.head = nn.Linear(width, 1)
        for layer in (*self.top_mlp, self.head):
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (layer.in_features + layer.out_features)))
                _init_bias(layer)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, NUM_DENSE + NUM_SPARSE) float rows [dense, row ids] -> (batch,) logits."""
        dense, sparse = inputs.split([NUM_DENSE, NUM_SPARSE], dim=1)
        bottom = self.bottom_mlp(dense)
        vectors = torch.cat([bottom.unsqueeze(1), self.embedding(sparse.long())], dim=1)
        features = torch.cat([bottom, self.interact(vectors)], dim=1)
        return self.head(self.top_mlp(features)).squeeze(-1)


class Workload(AdultCtrWorkload, TorchWorkload):
    def build_model(self) -> nn.Module:
        return DlrmSmall()

    def eval_sums(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch["targets"]
        return {
            "loss": F.binary_cross_entropy_with_logits(logits, targets, reduction="sum"),
            "errors": ((logits > 0) != (targets > 0.5)).sum(),
            "count": torch.tensor(float(len(targets))),
        }

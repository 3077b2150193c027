"""A small GPT-style decoder (Radford et al., 2019): pre-LayerNorm blocks of causal self-attention
and a GELU MLP, learned position embeddings, byte vocabulary.

    python submit.py --workload kjv_lm --submission nadamw
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.torch.workload import FUSED_ATTENTION_PARAMETER_TYPES, TorchWorkload
from workloads.kjv_lm.workload import SEQUENCE_LENGTH, VOCABULARY_SIZE, KjvLmWorkload


class CausalSelfAttention(nn.Module):
    algoperf_parameter_types = FUSED_ATTENTION_PARAMETER_TYPES

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.dropout(self.out(y.transpose(1, 2).reshape(batch, length, width)))


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ByteGPT(nn.Module):
    def __init__(self, width: int = 128, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCABULARY_SIZE, width)
        self.position_embedding = nn.Embedding(SEQUENCE_LENGTH, width)
        self.dropout = nn.Dropout(0.0)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCABULARY_SIZE)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        return self.head(self.ln(self.blocks(x)))


class Workload(KjvLmWorkload, TorchWorkload):
    def build_model(self) -> nn.Module:
        return ByteGPT()

    def eval_sums(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch["targets"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        return {"loss": loss, "count": torch.tensor(float(targets.numel()))}

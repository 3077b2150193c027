"""Fashion-MNIST with a small Vision Transformer (Dosovitskiy et al., 2021), shaped like AlgoPerf's
imagenet_vit: a strided-convolution patch embedding plus fixed 2-D sin-cos position embeddings,
pre-LayerNorm encoder blocks (multi-head self-attention, then a GELU MLP), a final LayerNorm,
global average pooling over patches, a tanh pre-logits layer and a zero-initialised head.

    python submit.py --workload fashion_mnist_vit --submission nadamw
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.torch.workload import FUSED_ATTENTION_PARAMETER_TYPES
from workloads.fashion_mnist import torch as fashion_mnist_torch
from workloads.fashion_mnist_vit.workload import FashionMnistVitWorkload

IMAGE_SIZE, CHANNELS, NUM_CLASSES = 28, 1, 10


def posemb_sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> torch.Tensor:
    """(height * width, dim) embeddings: sin/cos of x and of y at dim // 4 geometric frequencies."""
    if dim % 4:
        raise ValueError(f"the sin-cos position embedding needs a width divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1))
    y, x = y.flatten()[:, None] * omega, x.flatten()[:, None] * omega
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused query/key/value projections."""

    algoperf_parameter_types = FUSED_ATTENTION_PARAMETER_TYPES

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        for layer in (self.qkv, self.out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """x + dropout(attention(LN(x))), then x + dropout(MLP(LN(x)))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.attention = SelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Dropout(0.0),
                                 nn.Linear(4 * width, width))
        for layer in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=1e-6)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.ln1(x)))
        return x + self.dropout(self.mlp(self.ln2(x)))


class SmallViT(nn.Module):
    def __init__(self, patch: int = 7, width: int = 64, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(CHANNELS, width, patch, stride=patch)
        side = IMAGE_SIZE // patch
        self.register_buffer("position_embedding", posemb_sincos_2d(side, side, width), persistent=False)
        self.dropout = nn.Dropout(0.0)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.ln = nn.LayerNorm(width, eps=1e-6)
        self.pre_logits = nn.Linear(width, width)
        self.head = nn.Linear(width, NUM_CLASSES)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(images).flatten(2).transpose(1, 2)  # (batch, patches, width)
        x = self.ln(self.blocks(self.dropout(x + self.position_embedding)))
        return self.head(torch.tanh(self.pre_logits(x.mean(dim=1))))


class Workload(FashionMnistVitWorkload, fashion_mnist_torch.Workload):
    """The ResNet workload's evaluation and data with the ViT in place of the ResNet."""

    def build_model(self) -> nn.Module:
        return SmallViT()

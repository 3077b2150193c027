"""Fashion-MNIST with a small ResNet (He et al., 2016): three stages of basic blocks, 16/32/64 channels.

    python submit.py --workload fashion_mnist --submission nadamw
"""

from __future__ import annotations

import torch
from torch import nn

from harness.backends.torch.workload import TorchWorkload
from workloads.fashion_mnist.workload import FashionMnistWorkload


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut: y = relu(F(x) + s(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, in_channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock(in_channels, width, stride=1 if i == 0 else 2))
            in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class Workload(FashionMnistWorkload, TorchWorkload):
    def build_model(self) -> nn.Module:
        return SmallResNet()

    def eval_sums(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch["targets"]
        return {
            "loss": nn.functional.cross_entropy(logits, targets, reduction="sum"),
            "errors": (logits.argmax(dim=-1) != targets).sum(),
            "count": torch.tensor(float(len(targets))),
        }

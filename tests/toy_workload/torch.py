"""The toy workload in PyTorch: a linear classifier on the blobs of `workload.py`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from harness.backends.torch.workload import TorchWorkload

# The folder is also loaded by path (tests/ need not be importable): its workload.py beside this file.
_spec = importlib.util.spec_from_file_location("timetrial_toy_facts", Path(__file__).with_name("workload.py"))
_facts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_facts)


class LinearModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class Workload(_facts.ToyWorkload, TorchWorkload):
    def build_model(self) -> nn.Module:
        return LinearModel()

    def eval_sums(self, logits, batch):
        targets = batch["targets"]
        return {
            "loss": nn.functional.cross_entropy(logits, targets, reduction="sum"),
            "errors": (logits.argmax(-1) != targets).sum(),
            "count": torch.tensor(float(len(targets))),
        }

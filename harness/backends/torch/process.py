"""What this PyTorch process is: distributed or not, its rank, its device, the devices it can see.

One owner for the answer that the harness (where a workload puts its tensors) and submissions
(AlgoPerf's `pytorch_utils.pytorch_setup()`) both need. A trial's worker is one process unless it
was started by `torchrun`, which sets `LOCAL_RANK`, as AlgoPerf's runner assumes.
"""

from __future__ import annotations

import os

import torch


def pytorch_setup() -> tuple[bool, int, torch.device, int]:
    """(use_pytorch_ddp, rank, device, n_gpus), as AlgoPerf v0.6's `pytorch_utils.pytorch_setup`.

    `use_pytorch_ddp` is true in a process that torchrun started (`LOCAL_RANK` is set); `rank` is
    that local rank (0 otherwise); `device` is `cuda:<rank>` where CUDA is available, else the CPU;
    `n_gpus` counts the CUDA devices the trial trains on: under torchrun one per process (`WORLD_SIZE`,
    the trial's `--num_devices`, perhaps fewer than the machine has), else those this process sees.
    """
    use_pytorch_ddp = "LOCAL_RANK" in os.environ
    rank = int(os.environ["LOCAL_RANK"]) if use_pytorch_ddp else 0
    n_gpus = torch.cuda.device_count()
    if use_pytorch_ddp and n_gpus:
        n_gpus = int(os.environ.get("WORLD_SIZE", n_gpus))
    return use_pytorch_ddp, rank, default_device(), n_gpus


def default_device() -> torch.device:
    """The device this process trains on: its local rank's GPU, or the CPU when there is none."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")

"""A PyTorch trial on several devices: one process per device under torchrun, the model in DDP.

    python -m harness.backends.torch.distributed launch <num_devices> <trial_dir>   # the agent
    python -m harness.backends.torch.distributed rank <trial_dir>                   # one per device

The trial's worker (`harness/worker.py`) holds the trial's lock and starts the agent (`launch`), which
runs torchrun (`torch.distributed.run --standalone --nproc_per_node N`); torchrun starts the ranks.
Each process dies with its parent (PR_SET_PDEATHSIG), so killing the worker, even by SIGKILL, ends
them all, and the worker, the subreaper of the trial's processes, kills what is left when it ends.

Every rank runs the trial loop on its device (`cuda:LOCAL_RANK`, or the CPU) in a process group
(NCCL for CUDA tensors and gloo for CPU ones, gloo alone on a CPU), with AlgoPerf's rule that the
batch size is global:

- training: every rank draws the same batches (same seeds) and takes its contiguous 1/N of each
  (`train_part`; the batch size must be a multiple of N); the model is wrapped in
  DistributedDataParallel, which averages the gradients; the short form sums the loss and the
  example count over the ranks (as AlgoPerf's baselines do), so that the gradient is that of the
  global mean loss: with S = Σ_r s_r and C = Σ_r c_r, ∂(S/C)/∂θ = (1/N) Σ_r N·∂s_r/∂θ / C.
- evaluation: each rank evaluates its part of every evaluation batch (`eval_part`) with the model
  itself (not the DDP wrapper); the per-batch sums of all ranks are gathered and combined in rank
  order (`combine_eval_sums`): scalars added, arrays concatenated, so the metrics are those of one
  process over the whole batches.
- decisions: the trial loop takes rank 0's (`Ranks.first_says`), over gloo (no device sync), and
  sums the training losses over the ranks (`Ranks.sum`) before checking them. Only rank 0 writes.

A rank other than 0 whose trial fails writes its reason to `$TIMETRIAL_RANK_ERRORS/rank_<r>.json` for the
worker, which records the failure when rank 0 could not.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from harness.errors import UserInputError

MODULE = "harness.backends.torch.distributed"  # this file, as `python -m` runs it
SUPERVISOR_VARIABLE = "TIMETRIAL_SUPERVISOR_PID"  # the worker: the agent dies with it
AGENT_VARIABLE = "TIMETRIAL_AGENT_PID"  # the agent: the ranks die with it
ERRORS_VARIABLE = "TIMETRIAL_RANK_ERRORS"  # where a failed rank leaves its reason
DDP_PREFIX = "module."  # DistributedDataParallel's parameter names: module.<the model's name>


# ----- this process in the process group -----
def process_count() -> int:
    """The processes training this trial together: torchrun's world size, 1 outside a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if process_count() > 1 else 0


def unwrapped(model: Any) -> Any:
    """The model inside a DistributedDataParallel wrapper; anything else as it is."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def model_name(name: str) -> str:
    """A parameter's name in the model, also when given as DDP names it (`module.<name>`)."""
    return name[len(DDP_PREFIX):] if process_count() > 1 and name.startswith(DDP_PREFIX) else name


class ParameterTypes(dict):
    """A parameter-type tree keyed by the model's names that also answers DDP's names (`module.<name>`),
    for submissions that look types up by `named_parameters()` of the wrapped model."""

    def __missing__(self, key):
        if isinstance(key, str) and key.startswith(DDP_PREFIX):
            return self[key[len(DDP_PREFIX):]]
        raise KeyError(key)


# ----- splitting batches -----
def train_part(index: np.ndarray, rank: int, count: int) -> np.ndarray:
    """Rank `rank`'s contiguous 1/`count` of a training batch's example indices."""
    return np.asarray(index).reshape(count, -1)[rank]


def eval_part(index: np.ndarray, rank: int, count: int) -> tuple[np.ndarray, bool]:
    """Rank `rank`'s contiguous part of an evaluation batch's indices (`np.array_split`: the first
    len % count parts are one longer), and whether it is real. A rank whose part is empty (a batch of
    fewer examples than ranks) evaluates the batch's first example instead, so that every rank runs
    the same model calls, and its sums are dropped (`combine_eval_sums`)."""
    index = np.asarray(index)
    part = np.array_split(index, count)[rank]
    return (part, True) if len(part) else (index[:1], False)


def combine_eval_sums(parts: list[list[dict]], real: list[list[bool]]) -> list[dict]:
    """Per evaluation batch, the sums of every rank's part in rank order (`parts[r][b]`, on the host):
    scalars added in float64, arrays concatenated; parts that are not real are left out."""
    combined = []
    for b in range(len(parts[0])):
        kept = [parts[r][b] for r in range(len(parts)) if real[r][b]]
        combined.append({
            key: (float(np.sum([float(p[key]) for p in kept])) if np.ndim(kept[0][key]) == 0
                  else np.concatenate([np.asarray(p[key]) for p in kept]))
            for key in kept[0]
        })
    return combined


def gather(value: Any) -> list[Any]:
    """`value` of every rank, in rank order (pickled: host data)."""
    values = [None] * process_count()
    dist.all_gather_object(values, value)
    return values


# ----- the trial loop's view (harness.trial.Devices) -----
class Ranks:
    """The trial's processes, one per device: DDP for the model, rank 0's decisions, summed losses."""

    def __init__(self, device: torch.device, num_devices: int) -> None:
        if process_count() != num_devices:
            raise UserInputError(f"a trial on {num_devices} devices runs as {num_devices} processes under torchrun "
                                 f"(python -m harness.worker starts them); this process group has {process_count()}")
        self.count, self.device = num_devices, device
        self.is_main = rank() == 0

    def place_model(self, params: torch.nn.Module, model_state: Any) -> tuple[DistributedDataParallel, Any]:
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(params, device_ids=device_ids), model_state

    def first_says(self, *flags: bool) -> tuple[bool, ...]:
        said = torch.tensor(flags, dtype=torch.uint8)  # a CPU tensor: gloo, no wait for the device
        dist.broadcast(said, src=0)
        return tuple(bool(flag) for flag in said.tolist())

    def sum(self, values: list[tuple]) -> list[tuple]:
        """Each scalar of `values` (a list of tuples of tensors or numbers) summed over the ranks, as
        float64 tensors, in one all-reduce."""
        if not values:
            return values
        flat = torch.stack([torch.as_tensor(v, device=self.device).detach().double() for pair in values for v in pair])
        dist.all_reduce(flat)
        it = iter(flat)
        return [tuple(next(it) for _ in pair) for pair in values]


class _SumOverRanks(torch.autograd.Function):
    """S = Σ_r x_r in every rank; backward: each rank's x_r gets Σ_r' ∂L_r'/∂S, the gradient of the sum of
    all ranks' losses (as `torch.distributed.nn.functional.all_reduce`, which AlgoPerf's baselines use)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the ranks, differentiably. With DDP averaging the gradients over the N ranks,
    the loss S/C (S, C summed over the ranks) gets the gradient (1/N) Σ_r N ∂s_r/∂θ / C = ∂(S/C)/∂θ."""
    return _SumOverRanks.apply(tensor)


def summed(value: torch.Tensor | int, device: torch.device) -> torch.Tensor:
    """A count (tensor or number) summed over the ranks, as a tensor on `device`."""
    total = torch.as_tensor(value, device=device).detach().clone()
    dist.all_reduce(total)
    return total


def global_mean(summed_loss: torch.Tensor, count: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor | int]:
    """(mean loss over the global batch, its example count) from this process's summed loss and count: in a
    trial on several processes both are summed over them, the loss differentiably (`sum_with_gradient`), so
    that the gradient DDP averages (or `average_over_processes` does) is the global mean's."""
    if process_count() > 1:
        summed_loss, count = sum_with_gradient(summed_loss), summed(count, summed_loss.device)
    return summed_loss / count, count


def average_over_processes(tensors: list[torch.Tensor]) -> None:
    """In place, each tensor the mean of its values over the processes, in one all-reduce: for gradients
    computed outside DDP's hooks (curvature submissions run the unwrapped model); nothing in one process."""
    count = process_count()
    if count == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= count
    for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.copy_(part.view_as(tensor))


# ----- processes: the agent and the ranks -----
def launch(trial_dir: Path, num_devices: int, errors_dir: Path) -> int:
    """Run the trial on `num_devices` devices (the agent and its ranks, as children of this process);
    the agent's exit status (0 when every rank exited 0). One GPU per process where there are GPUs."""
    import subprocess

    if torch.cuda.is_available() and num_devices > torch.cuda.device_count():
        raise UserInputError(f"--num_devices {num_devices}: this machine has {torch.cuda.device_count()} GPU(s); "
                             "a PyTorch trial runs one process per GPU")

    command = [sys.executable, "-m", MODULE, "launch", str(num_devices), str(trial_dir)]
    env = {**os.environ, SUPERVISOR_VARIABLE: str(os.getpid()), ERRORS_VARIABLE: str(errors_dir)}
    return subprocess.run(command, env=env).returncode


def _agent(num_devices: int, trial_dir: str) -> int:
    from torch.distributed.run import main as torchrun

    from harness.worker import die_with

    die_with(int(os.environ[SUPERVISOR_VARIABLE]))
    os.environ[AGENT_VARIABLE] = str(os.getpid())
    try:
        torchrun(["--standalone", f"--nproc_per_node={num_devices}", "-m", MODULE, "rank", trial_dir])
    except Exception as exc:  # noqa: BLE001 - torchrun raises ChildFailedError when a rank fails; it said why
        print(f"torchrun: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


def _rank(trial_dir: Path) -> int:
    from harness.backends.torch.process import default_device
    from harness.contention import ContentionMonitor, read_cpu
    from harness.worker import die_with, run_trial_here

    die_with(int(os.environ[AGENT_VARIABLE]))
    device = default_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    me, supervisor = rank(), psutil.Process(int(os.environ[SUPERVISOR_VARIABLE]))  # its tree: the trial's processes
    try:
        outcome = run_trial_here(trial_dir, is_main=me == 0,
                                 contention=ContentionMonitor(read=lambda: read_cpu(process=supervisor)))
        if outcome.status == "failed" and me != 0:  # rank 0 records its own failure in summary.json
            reason = {"stop_reason": outcome.stop_reason, "error": outcome.error}
            (Path(os.environ[ERRORS_VARIABLE]) / f"rank_{me}.json").write_text(json.dumps(reason))
    finally:
        dist.destroy_process_group()
    return 1 if outcome.status == "failed" else 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["launch"] and len(argv) == 4:
        return _agent(int(argv[2]), argv[3])
    if argv[1:2] == ["rank"] and len(argv) == 3:
        return _rank(Path(argv[2]))
    print(f"usage: python -m {MODULE} launch <num_devices> <trial_dir> | rank <trial_dir>", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

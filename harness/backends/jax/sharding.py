"""AlgoPerf v0.6's `algoperf.jax_sharding_utils` names, for JAX submissions that run unmodified.

AlgoPerf v0.6 JAX submissions compile their step with `jax.jit(..., in_shardings=...,
out_shardings=...)` over one mesh of all devices with a single axis named 'batch': the model,
optimizer state and random keys replicated on every device, the batch split along its first
dimension. These are those shardings over the trial's devices: the first `--num_devices` of this
process's (`use_devices`), or all of them (`jax.devices()`) when the trial did not say; on one device
both are the trivial sharding, and a trial's results do not depend on them.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from harness.errors import UserInputError

AXIS = "batch"  # the mesh axis's name in AlgoPerf v0.6
_trial_devices: list | None = None  # set by `use_devices`


def use_devices(num_devices: int) -> None:
    """Make the mesh the first `num_devices` devices of this process (a trial's `--num_devices`)."""
    global _trial_devices
    available = jax.local_devices()
    if num_devices > len(available):
        raise UserInputError(f"--num_devices {num_devices}: JAX sees {len(available)} device(s) here "
                             f"({available[0].platform}); on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count="
                             f"{num_devices} makes as many")
    _trial_devices = available[:num_devices]


def _mesh() -> Mesh:
    return Mesh(_trial_devices or jax.devices(), (AXIS,))


def get_replicate_sharding() -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(_mesh(), PartitionSpec())


def get_batch_dim_sharding() -> NamedSharding:
    """The first dimension is split evenly across the devices."""
    return NamedSharding(_mesh(), PartitionSpec(AXIS))


def replicate(tree: Any) -> Any:
    """Every array of `tree` placed whole on every device."""
    return jax.device_put(tree, get_replicate_sharding())


def shard_along_batch_dim(tree: Any) -> Any:
    """Every array of `tree` split along its first dimension across the devices."""
    return jax.device_put(tree, get_batch_dim_sharding())


def display_shard_info(array: jax.Array) -> None:
    """Print where each shard of `array` lives."""
    for shard in array.addressable_shards:
        print(f"shard.device: {shard.device}, index: {shard.index}, replica_id: {shard.replica_id}.")

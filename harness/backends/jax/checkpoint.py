"""Checkpoints of a JAX trial: parameters, model state, optimizer state, host random states and the loop.

Written with Flax's msgpack serialization (`flax.serialization`): arrays, numbers, strings, None and
dicts and lists of them, so reading a checkpoint cannot run code. Pytrees (dicts, lists, tuples,
named tuples such as optax's states) are stored as their state dicts and restored into the
structure that the fresh `init_model_fn` and `init_optimizer_state` built, so the live tree keeps
its types. The file is written to a temporary name, flushed, then renamed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from harness.records import atomic_write_bytes


def _host_random_states() -> dict:
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [numpy_state[0], numpy_state[1], *(np.asarray(v).item() for v in numpy_state[2:])]}


def _set_host_random_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def _lists(value: Any) -> Any:
    """`value` with its tuples as lists (msgpack packs no tuples)."""
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    return value


def save(path: Path, params, model_state, optimizer_state, loop: dict) -> list[str]:
    """Write the checkpoint atomically; nothing in a JAX trial's state is left out (no warnings)."""
    state = {"params": params, "model_state": model_state, "optimizer_state": optimizer_state}
    payload = {"state": serialization.to_state_dict(jax.device_get(state)), "random": _host_random_states(),
               "loop": _lists(loop)}
    atomic_write_bytes(path, serialization.msgpack_serialize(payload))
    return []


def load(path: Path, params, optimizer_state) -> tuple[Any, Any, Any, dict]:
    """(params, model_state, optimizer_state, loop): params and optimizer state restored into the fresh
    trees' structure, the model state (dicts of arrays) as saved."""
    payload = serialization.msgpack_restore(Path(path).read_bytes())
    saved = payload["state"]
    params = serialization.from_state_dict(params, saved["params"])
    optimizer_state = serialization.from_state_dict(optimizer_state, saved["optimizer_state"])
    model_state = saved["model_state"]
    _set_host_random_states(payload["random"])
    loop = payload["loop"]
    loop["eval_results"] = [(step, results) for step, results in loop["eval_results"]]  # pairs, as the loop keeps them
    return jax.device_put(params), jax.device_put(model_state), jax.device_put(optimizer_state), loop

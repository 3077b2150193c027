"""Checkpoints of a JAX trial: parameters, model state, optimizer state, host random states and the loop.

Written with Flax's msgpack serialization (`flax.serialization`): arrays, numbers, strings, None and
dicts and lists of them, so reading a checkpoint cannot run code. Pytrees (dicts, lists, tuples,
named tuples such as optax's states) are stored as their state dicts and restored into the
structure that the fresh `init_model_fn` and `init_optimizer_state` built, so the live tree keeps
its types. Anything else in the optimizer state (a jitted function, an object) is not saved:
`save` returns a warning naming where it sits, and a resumed trial keeps what the fresh
`init_optimizer_state` built there, as for torch. The file is written to a temporary name, flushed,
then renamed.
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


_UNSAVED = "__timetrial_unsaved__"  # marks a value that was left out
_PLAIN = (np.ndarray, np.generic, int, float, complex, str, bytes, bool, type(None))


def _plain(state: Any, where: str, unsaved: list[str]) -> Any:
    """A state dict with what msgpack cannot hold replaced by a marker, and named in `unsaved`."""
    if isinstance(state, dict):
        return {key: _plain(value, f"{where}[{key!r}]", unsaved) for key, value in state.items()}
    if isinstance(state, _PLAIN):
        return state
    unsaved.append(f"{where} ({type(state).__name__})")
    return {_UNSAVED: type(state).__name__}


def _with_fresh(saved: Any, fresh: Any) -> Any:
    """The saved state dict with each marker replaced by the fresh state dict's value there."""
    if isinstance(saved, dict) and _UNSAVED in saved:
        return fresh
    if isinstance(saved, dict):
        return {key: _with_fresh(value, fresh.get(key) if isinstance(fresh, dict) else None)
                for key, value in saved.items()}
    return saved


def save(path: Path, params, model_state, optimizer_state, loop: dict) -> list[str]:
    """Write the checkpoint atomically; returns one warning per part of the state that was not saved."""
    unsaved: list[str] = []
    state = {"params": params, "model_state": model_state, "optimizer_state": optimizer_state}
    state_dict = serialization.to_state_dict(jax.device_get(state))
    payload = {"state": {part: _plain(value, part, unsaved) for part, value in state_dict.items()},
               "random": _host_random_states(), "loop": _lists(loop)}
    atomic_write_bytes(path, serialization.msgpack_serialize(payload))
    return [f"checkpoint: {where} is not plain data and was not saved; a resumed trial keeps the value "
            "that init_optimizer_state builds" for where in unsaved]


def load(path: Path, params, optimizer_state, placement=None) -> tuple[Any, Any, Any, dict]:
    """(params, model_state, optimizer_state, loop): params and optimizer state restored into the fresh
    trees' structure, the model state (dicts of arrays) as saved; all placed at `placement` (a device or
    sharding; default: the first device)."""
    payload = serialization.msgpack_restore(Path(path).read_bytes())
    saved = payload["state"]
    params = serialization.from_state_dict(params, saved["params"])
    fresh = serialization.to_state_dict(optimizer_state)
    optimizer_state = serialization.from_state_dict(optimizer_state, _with_fresh(saved["optimizer_state"], fresh))
    model_state = saved["model_state"]
    _set_host_random_states(payload["random"])
    loop = payload["loop"]
    loop["eval_results"] = [(step, results) for step, results in loop["eval_results"]]  # pairs, as the loop keeps them
    placement = placement or jax.devices()[0]
    return tuple(_on_device(tree, placement) for tree in (params, model_state, optimizer_state)) + (loop,)


def _on_device(tree: Any, placement) -> Any:
    """The tree with its NumPy arrays at `placement` (committed, as the live state is)."""
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, placement) if isinstance(x, (np.ndarray, np.generic)) else x, tree)

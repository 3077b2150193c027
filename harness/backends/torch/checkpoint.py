"""Checkpoints of a PyTorch trial: model, optimizer state, random states and the loop's own state.

Only plain data is written — tensors, numbers, strings, bytes, booleans, None, dtypes, devices, and
dicts, lists, tuples and sets of them — so a checkpoint loads with `torch.load(weights_only=True)`
and cannot run code. The optimizer state is whatever `init_optimizer_state` returned, converted:

- a value with `state_dict()` and `load_state_dict()` (optimizers, LR schedulers, modules, a
  submission's own helper classes) is saved as its state dict, converted the same way;
- dicts, lists, tuples, named tuples, deques and NumPy arrays keep their shape and type;
- anything else (a function, an enum, an object without a state dict) is not saved: `save`
  returns a warning naming where it sits, and a resumed trial keeps the value that the fresh
  `init_optimizer_state` built there (right for what a submission builds once: hyperparameters,
  constants, parameter-type trees).

On resume the submission builds a fresh optimizer state for the fresh model, and the saved state is
loaded into it, so parameter references stay those of the live model. A model in DistributedDataParallel
(a trial on several devices) is saved and loaded as the model it wraps, so the file is the same for
any number of devices. Files are written to a temporary name, then renamed.
"""

from __future__ import annotations

import collections
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.backends.torch.distributed import unwrapped

_TAG = "__timetrial__"  # marks a dict that encodes a value of another type
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype, torch.device, torch.Size)


def _is_named_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _to_saved(value: Any, where: str, unsaved: list[str]) -> Any:
    """`value` as plain data; what cannot be is replaced by a marker and named in `unsaved`."""
    if isinstance(value, _PLAIN):
        return value
    if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return {_TAG: "state_dict", "value": _to_saved(value.state_dict(), f"{where}.state_dict()", unsaved)}
    if isinstance(value, np.ndarray):
        return {_TAG: "ndarray", "value": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_saved(v, f"{where}[{k!r}]", unsaved) for k, v in value.items()}
    if isinstance(value, collections.deque):
        items = [_to_saved(v, f"{where}[{i}]", unsaved) for i, v in enumerate(value)]
        return {_TAG: "deque", "maxlen": value.maxlen, "items": items}
    if _is_named_tuple(value):
        items = [_to_saved(v, f"{where}.{name}", unsaved) for name, v in zip(type(value)._fields, value)]
        return {_TAG: "named_tuple", "items": items}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_saved(v, f"{where}[{i}]", unsaved) for i, v in enumerate(value))
    if isinstance(value, (set, frozenset)) and all(isinstance(v, _PLAIN) for v in value):
        return value
    unsaved.append(f"{where} ({type(value).__name__})")
    return {_TAG: "unsaved", "type": type(value).__name__}


def _restore_into(fresh: Any, saved: Any) -> Any:
    """The saved value, loaded into the matching part of the freshly built `fresh` where it has one."""
    tag = saved.get(_TAG) if isinstance(saved, dict) else None
    if tag == "unsaved":
        return fresh
    if tag == "state_dict":
        fresh.load_state_dict(_restore_into(fresh.state_dict(), saved["value"]))
        return fresh
    if tag == "ndarray":
        return saved["value"].numpy()
    if tag == "deque":
        fresh_items = list(fresh) if isinstance(fresh, collections.deque) else []
        return collections.deque(_restore_list(fresh_items, saved["items"]), maxlen=saved["maxlen"])
    if tag == "named_tuple":
        items = _restore_list(list(fresh) if _is_named_tuple(fresh) else [], saved["items"])
        return type(fresh)._make(items) if _is_named_tuple(fresh) and len(fresh) == len(items) else tuple(items)
    if isinstance(saved, dict):
        fresh_dict = fresh if isinstance(fresh, dict) else {}
        return {k: _restore_into(fresh_dict.get(k), v) for k, v in saved.items()}
    if isinstance(saved, (list, tuple)) and not isinstance(saved, torch.Size):
        fresh_items = list(fresh) if isinstance(fresh, (list, tuple)) else []
        return type(saved)(_restore_list(fresh_items, saved))
    return saved


def _restore_list(fresh: list, saved: list) -> list:
    return [_restore_into(fresh[i] if i < len(fresh) else None, v) for i, v in enumerate(saved)]


def save(path: Path, params: torch.nn.Module, model_state: Any, optimizer_state: Any, loop: dict) -> list[str]:
    """Write the checkpoint atomically; returns one warning per part of the state that was not saved."""
    unsaved: list[str] = []
    payload = {
        "model": unwrapped(params).state_dict(),
        "model_state": _to_saved(model_state, "model_state", unsaved),
        "optimizer_state": _to_saved(optimizer_state, "optimizer_state", unsaved),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": _to_saved(np.random.get_state(), "numpy", unsaved),
            "python": random.getstate(),
        },
        "loop": _to_saved(loop, "loop", unsaved),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return [
        f"checkpoint: {where} is not plain data and was not saved; a resumed trial keeps the value "
        "that init_optimizer_state builds" for where in unsaved
    ]


def load(path: Path, params: torch.nn.Module, optimizer_state: Any) -> tuple[Any, Any, dict]:
    """Load into the live model and fresh optimizer state; returns (model_state, optimizer_state, loop).

    The file is read with `weights_only=True`: a checkpoint that holds anything but plain data is
    refused instead of unpickled."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    unwrapped(params).load_state_dict(payload["model"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(_restore_into(None, rng["numpy"]))
    random.setstate(rng["python"])
    model_state = _restore_into(None, payload["model_state"])
    return model_state, _restore_into(optimizer_state, payload["optimizer_state"]), _restore_into(None, payload["loop"])

"""Checkpoints of a PyTorch trial: model, optimizer state, random states and the loop's own state.

The optimizer state is whatever `init_optimizer_state` returned. It is saved by `state_dict()`
wherever a value has one (optimizers, LR schedulers, modules), recursively through dicts, lists
and tuples, and as the value itself otherwise. On resume the submission builds a fresh optimizer
state for the fresh model, and the saved state is loaded into it, so parameter references stay
those of the live model. Files are written to a temporary name, then renamed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _to_saved(value: Any) -> Any:
    if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return {"__state_dict__": value.state_dict()}
    if isinstance(value, dict):
        return {k: _to_saved(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_saved(v) for v in value)
    return value


def _restore_into(fresh: Any, saved: Any) -> Any:
    if isinstance(saved, dict) and "__state_dict__" in saved:
        fresh.load_state_dict(saved["__state_dict__"])
        return fresh
    if isinstance(saved, dict) and isinstance(fresh, dict):
        return {k: _restore_into(fresh.get(k), v) for k, v in saved.items()}
    if isinstance(saved, (list, tuple)) and isinstance(fresh, (list, tuple)):
        return type(saved)(_restore_into(f, s) for f, s in zip(fresh, saved))
    return saved


def save(path: Path, params: torch.nn.Module, model_state: Any, optimizer_state: Any, loop: dict) -> None:
    payload = {
        "model": params.state_dict(),
        "model_state": model_state,
        "optimizer_state": _to_saved(optimizer_state),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        "loop": loop,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: Path, params: torch.nn.Module, optimizer_state: Any) -> tuple[Any, Any, dict]:
    """Load into the live model and fresh optimizer state; returns (model_state, optimizer_state, loop)."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    params.load_state_dict(payload["model"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return payload["model_state"], _restore_into(optimizer_state, payload["optimizer_state"]), payload["loop"]

"""Torch weights as Flax variables, for the parity tests: a torch module's parameters and BatchNorm
statistics placed at the Flax paths that a test maps them to."""

from __future__ import annotations

import numpy as np
import torch


def conv_kernel(weight: torch.Tensor) -> np.ndarray:
    """(out, in, kh, kw) -> Flax's (kh, kw, in, out)."""
    return weight.detach().numpy().transpose(2, 3, 1, 0)


def dense_kernel(weight: torch.Tensor) -> np.ndarray:
    """(out, in) -> Flax's (in, out)."""
    return weight.detach().numpy().T


def set_path(tree: dict, path: str, value: np.ndarray) -> None:
    """Set `tree`'s leaf at `path` to a copy of `value` (torch's `.numpy()` shares the tensor's memory)."""
    *parents, leaf = path.split("/")
    for name in parents:
        tree = tree.setdefault(name, {})
    tree[leaf] = np.array(value)


def convert(module: torch.nn.Module, modules: dict[str, str]) -> tuple[dict, dict]:
    """(params, batch_stats) from `module`; `modules` maps torch module names to Flax module paths.
    Convolutions, dense layers (with bias) and BatchNorm layers are converted."""
    params, stats = {}, {}
    named = dict(module.named_modules())
    for torch_name, flax_path in modules.items():
        layer = named[torch_name]
        if isinstance(layer, torch.nn.Conv2d):
            set_path(params, f"{flax_path}/kernel", conv_kernel(layer.weight))
        elif isinstance(layer, torch.nn.Linear):
            set_path(params, f"{flax_path}/kernel", dense_kernel(layer.weight))
            set_path(params, f"{flax_path}/bias", layer.bias.detach().numpy())
        elif isinstance(layer, torch.nn.BatchNorm2d):
            set_path(params, f"{flax_path}/scale", layer.weight.detach().numpy())
            set_path(params, f"{flax_path}/bias", layer.bias.detach().numpy())
            set_path(stats, f"{flax_path}/mean", layer.running_mean.numpy())
            set_path(stats, f"{flax_path}/var", layer.running_var.numpy())
        else:
            raise TypeError(f"no conversion for {type(layer).__name__} ({torch_name})")
    if set(n for n, p in module.named_parameters()) - {f"{n}.{k}" for n in modules for k in ("weight", "bias")}:
        raise ValueError("some torch parameters have no Flax path")
    return params, stats


def indexed_path(torch_name: str) -> str:
    """`decoder.0.mlp.3` -> `decoder_0/mlp_3`: an index joins the name of its container, as Linen names
    the modules of a list."""
    path: list[str] = []
    for part in torch_name.split("."):
        if part.isdigit():
            path[-1] += f"_{part}"
        else:
            path.append(part)
    return "/".join(path)


def convert_layers(module: torch.nn.Module, flax_path=indexed_path) -> dict:
    """Flax params of `module`'s Linear (with or without bias), LayerNorm and Embedding layers, each at
    `flax_path(its torch name)`; every torch parameter must be placed."""
    params, placed = {}, set()
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear):
            weight = "kernel", dense_kernel(layer.weight)
        elif isinstance(layer, torch.nn.LayerNorm):
            weight = "scale", layer.weight.detach().numpy()
        elif isinstance(layer, torch.nn.Embedding):
            weight = "embedding", layer.weight.detach().numpy()
        else:
            continue
        bias = getattr(layer, "bias", None)
        for leaf, value in [weight] + ([("bias", bias.detach().numpy())] if bias is not None else []):
            set_path(params, f"{flax_path(name)}/{leaf}", value)
        placed.update(f"{name}.{p}" for p, _ in layer.named_parameters(recurse=False))
    if placed != {name for name, _ in module.named_parameters()}:
        raise ValueError("some torch parameters have no Flax path")
    return params


def conv1d_kernel(weight: torch.Tensor) -> np.ndarray:
    """(out, in / groups, k) -> Flax's (k, in / groups, out)."""
    return weight.detach().numpy().transpose(2, 1, 0)

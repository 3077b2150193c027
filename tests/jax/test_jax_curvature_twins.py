"""The JAX versions of the full-API submissions sophia_g, sophia_h, adahessian and mezo against their
torch twins: 25 steps through `init_optimizer_state`/`update_params` on the toy workload, from the
same initial weights on the same batches, give the same parameters within float32 tolerance.

The estimators' random draws (sampled labels, Hutchinson probes, MeZO's directions) come from each
framework's own generator, so each backend's one drawing function is replaced by one that returns
the same NumPy-generated values in call order (inside the compiled JAX step through `io_callback`).
Points with a large ρ keep most of Sophia's coordinates unclipped, so the curvature shapes the update.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jax.experimental import io_callback

import jax
from harness import spec
from harness.backends.jax import curvature as jax_curvature
from harness.backends.torch import curvature as torch_curvature
from harness.discovery import _import_file, find_submission, load_workload
from support import TOY_WORKLOAD

STEPS = 25
TOLERANCE = {"rtol": 2e-4, "atol": 2e-6}  # float32: as tests/jax/test_jax_submissions.py
# MeZO's projected gradient (ℓ₊ − ℓ₋)/(2ε) carries the forward passes' float32 rounding, about
# 2⁻²³·ℓ, amplified by 1/(2ε); over 25 steps of η·g·z that is up to 25·η·2⁻²³·ℓ/ε ≈ 3e-5 (η = 1e-2,
# ε = 1e-3, ℓ ≈ 1): its absolute tolerance.
MEZO_TOLERANCE = {"rtol": 2e-4, "atol": 3e-5}
POINTS = {
    "sophia_g": {"learning_rate": 0.05, "one_minus_beta1": 0.035, "beta2": 0.9, "rho": 20.0, "weight_decay": 0.1,
                 "warmup_factor": 0.1, "grad_clip": 1.0, "label_smoothing": 0.1, "dropout_rate": 0.0},
    "sophia_h": {"learning_rate": 0.02, "one_minus_beta1": 0.04, "beta2": 0.9, "rho": 20.0, "weight_decay": 0.1,
                 "warmup_factor": 0.1, "grad_clip": 1.0, "label_smoothing": 0.0, "dropout_rate": 0.0},
    "adahessian": {"learning_rate": 0.1, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 1e-3,
                   "hessian_power": 0.5, "warmup_factor": 0.1, "label_smoothing": 0.0, "dropout_rate": 0.0},
    "mezo": {"learning_rate": 1e-2, "epsilon": 1e-3, "weight_decay": 0.1},
}


class Draws:
    """Random values for the toy model, in call order: directions shaped like its parameters (Flax
    layout: `kernel` (4, 3), `bias` (3,)) and labels of its 3 classes."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(7)

    def directions(self, distribution: str) -> dict:
        draw = {"gaussian": self.rng.standard_normal,
                "rademacher": lambda shape: self.rng.choice([-1.0, 1.0], size=shape)}[distribution]
        return {"head": {"bias": draw((3,)).astype(np.float32), "kernel": draw((4, 3)).astype(np.float32)}}

    def labels(self, count: int) -> np.ndarray:
        return self.rng.integers(0, 3, count).astype(np.int32)


def as_torch(tree: dict) -> list[torch.Tensor]:
    """The toy model's Flax-layout tree as torch's parameter list (weight (3, 4), bias)."""
    return [torch.from_numpy(tree["head"]["kernel"].T.copy()), torch.from_numpy(tree["head"]["bias"])]


def fake_torch_draws(monkeypatch, module, name: str) -> None:
    draws = Draws()
    if name == "sophia_g":
        monkeypatch.setattr(module, "sampled_labels",
                            lambda workload, logits: torch.from_numpy(draws.labels(len(logits)).astype(np.int64)))
    elif name == "mezo":  # torch regenerates z from the step's seed three times per step
        by_seed: dict[int, list[torch.Tensor]] = {}

        def directions(params, seed):
            if seed not in by_seed:
                by_seed[seed] = as_torch(draws.directions("gaussian"))
            return iter(by_seed[seed])

        monkeypatch.setattr(module, "_directions", directions)
    else:
        monkeypatch.setattr(torch_curvature, "hutchinson_probes",
                            lambda params, distribution: as_torch(draws.directions(distribution)))


def fake_jax_draws(monkeypatch, module, name: str) -> None:
    draws = Draws()

    def directions(key, params, distribution):
        shapes = jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
        return io_callback(lambda: draws.directions(distribution), shapes)

    if name == "sophia_g":
        monkeypatch.setattr(module, "sampled_labels", lambda workload, logits, key: io_callback(
            lambda: draws.labels(len(logits)), jax.ShapeDtypeStruct((len(logits),), np.int32)))
    elif name == "mezo":
        monkeypatch.setattr(module, "random_directions", directions)
    else:
        monkeypatch.setattr(jax_curvature, "random_directions", directions)


def run(framework: str, name: str, point: dict, monkeypatch, data_dir, initial: dict | None = None):
    """25 steps of `name` on the toy workload; returns (initial params, final params, batches), the
    parameters as a Flax-layout tree of NumPy arrays."""
    module = _import_file(f"curvature_twin_{framework}_{name}", find_submission(name, framework).path)
    (fake_torch_draws if framework == "pytorch" else fake_jax_draws)(monkeypatch, module, name)
    workload = load_workload(str(TOY_WORKLOAD), framework, data_dir)
    params, model_state = workload.init_model_fn(0)
    if framework == "pytorch":
        weight, bias = (p.detach().numpy().copy() for p in params.parameters())
        initial = {"head": {"kernel": weight.T, "bias": bias}}
    else:
        params = jax.device_put(jax.tree_util.tree_map(np.asarray, initial), workload.device)
    hyperparameters = spec.make_hyperparameters(point)
    optimizer_state = module.init_optimizer_state(workload, params, model_state, hyperparameters, 0)
    queue = workload._build_input_queue(1, "train", str(data_dir), 16)
    batches = []
    for step in range(STEPS):
        batch = next(queue)
        batches.append({key: np.asarray(value) for key, value in batch.items()})
        optimizer_state, params, model_state = module.update_params(
            workload, params, workload.model_params_types, model_state, hyperparameters, batch, workload.loss_type,
            optimizer_state, [], step, 1000 + step)
    if framework == "pytorch":
        weight, bias = (p.detach().numpy() for p in params.parameters())
        return initial, {"head": {"kernel": weight.T, "bias": bias}}, batches
    return initial, jax.tree_util.tree_map(np.asarray, params), batches


@pytest.mark.parametrize("name", list(POINTS))
def test_jax_full_api_submission_matches_its_torch_twin_for_25_steps(name, monkeypatch, tmp_path):
    initial, expected, torch_batches = run("pytorch", name, POINTS[name], monkeypatch, tmp_path / "data")
    _, got, jax_batches = run("jax", name, POINTS[name], monkeypatch, tmp_path / "data", initial)
    for torch_batch, jax_batch in zip(torch_batches, jax_batches):  # the same data, in the same order
        np.testing.assert_array_equal(torch_batch["inputs"], jax_batch["inputs"])
        np.testing.assert_array_equal(torch_batch["targets"], jax_batch["targets"])
    for key in ("kernel", "bias"):
        assert not np.allclose(expected["head"][key], initial["head"][key], atol=1e-3), f"{name} did not move"
        np.testing.assert_allclose(got["head"][key], expected["head"][key], err_msg=f"{name} {key}",
                                   **(MEZO_TOLERANCE if name == "mezo" else TOLERANCE))

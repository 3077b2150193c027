"""Each JAX submission of the library against its torch twin: 25 steps of the same problem (the same
batches, the same initial weights, the same hyperparameter point) give the same parameters within
float32 tolerance, and every parameter moved. Then what the twins cannot show: Muon's Newton-Schulz
iterates and its choice of matrices on the mini workloads against torch's, and the stateful optimizers
resumed from a checkpoint.

Two problems: least squares on a linear model, and a small network (a 3x1 convolution, a hidden layer,
an output layer `head`) for the optimizers that treat matrices by shape or role (Muon, SOAP). Its
layers are near-square so that no statistic SOAP decomposes at its first step has more than one zero
eigenvalue: the eigenvectors of a repeated eigenvalue are any basis of its space, and torch's and JAX's
eigh pick different ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import linen as nn
from jax import lax

from harness import spec
from harness.backends.jax.workload import parameter_types as jax_parameter_types
from harness.backends.torch.workload import parameter_types as torch_parameter_types
from harness.discovery import available_workloads, find_submission, load_submission, load_workload, _import_file
from harness.prepare_data import DEFAULT_DATA_DIR
from harness.records import TrialRecord
from harness.trial import run_trial
from submissions.muon import jax as muon_jax
from submissions.muon import torch as muon_torch
from submissions.soap import common as soap_common
from support import TOY_WORKLOAD, NullProgress
from torch_to_flax import convert

STEPS, STEP_HINT = 25, 40  # warmup and the start of the cosine decay fall inside the 25 steps
BATCH = 16
OUTPUT_LAYER = "head"


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def linear(params, x):
    return x @ params["head"]["kernel"] + params["head"]["bias"]


class Network(torch.nn.Module):
    """(n, 1, 4, 2) -> 3x1 convolution (no bias) to 2 channels -> tanh -> 8 -> 9 -> tanh -> 8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, kernel_size=(3, 1), bias=False)
        self.hidden = torch.nn.Linear(8, 9)
        self.head = torch.nn.Linear(9, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv(x)).flatten(1)
        return self.head(torch.tanh(self.hidden(x)))


def network(params, x):
    """`Network` in Flax's layouts: NHWC images, (kh, kw, in, out) and (in, out) kernels."""
    conv = lax.conv_general_dilated(x.transpose(0, 2, 3, 1), params["conv"]["kernel"], (1, 1), "VALID",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jnp.tanh(conv).transpose(0, 3, 1, 2).reshape(len(x), -1)  # torch's flatten order
    x = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return x @ params["head"]["kernel"] + params["head"]["bias"]


@dataclass(frozen=True)
class Problem:
    torch_model: type[torch.nn.Module]
    jax_model: Callable
    input_shape: tuple[int, ...]
    output_size: int

    def batches(self, seed: int = 0):
        """(inputs, targets): a random linear teacher on the flattened inputs, plus noise."""
        rng = np.random.default_rng(seed)
        teacher = rng.normal(size=(int(np.prod(self.input_shape)), self.output_size)).astype(np.float32)
        for _ in range(STEPS):
            x = rng.normal(size=(BATCH, *self.input_shape)).astype(np.float32)
            noise = 0.1 * rng.normal(size=(BATCH, self.output_size)).astype(np.float32)
            yield x, x.reshape(BATCH, -1) @ teacher + noise


LINEAR = Problem(Linear, linear, (4,), 3)
NETWORK = Problem(Network, network, (1, 4, 2), 8)

FLOAT32 = {"rtol": 2e-4, "atol": 2e-6}
# SOAP's first steps in a fresh eigenbasis are Adam's sign-like steps on rotated gradients, and float32 eigh
# of statistics from gradients that differ in their last bits gives bases that differ by ~1e-5: the two
# frameworks end up to 6e-5 apart (torch's own float64 run ends 2e-5 from its float32 one). A wrong
# eigenbasis refresh (unsorted, or none) ends 1e-2 away.
SOAP_TOLERANCE = {"rtol": 1e-3, "atol": 2e-4}

# (submission, problem, hyperparameter point or None for the self-tuning point, tolerance)
TWINS = [
    ("nadamw", LINEAR, None, FLOAT32),
    ("adamw", LINEAR, None, FLOAT32),
    ("sgd_nesterov", LINEAR, None, FLOAT32),
    ("lion", LINEAR, None, FLOAT32),
    ("prodigy", LINEAR, None, FLOAT32),
    ("prodigy", LINEAR, {"one_minus_beta1": 0.1, "beta2": 0.99, "weight_decay": 0.1, "d_coef": 2.0,
                         "warmup_factor": 0.05}, FLOAT32),  # safeguard_warmup; no step at the rate 0 of step 0
    ("dadapt_adam", LINEAR, None, FLOAT32),  # warmup (no step at rate 0) and weight decay
    ("muon", NETWORK, None, FLOAT32),
    ("muon", NETWORK, {"learning_rate": 0.05, "one_minus_momentum": 0.05, "weight_decay": 0.01,
                       "adam_learning_rate": 3e-3, "adam_weight_decay": 0.01, "warmup_factor": 0.05}, FLOAT32),
    ("soap", NETWORK, None, SOAP_TOLERANCE),  # eigenbasis refreshes at steps 10 and 20
    ("soap", NETWORK, {"learning_rate": 1e-2, "one_minus_beta1": 0.1, "beta2": 0.99, "weight_decay": 0.1,
                       "precondition_frequency": 3, "warmup_factor": 0.05}, SOAP_TOLERANCE),
]


def twin_workload(model_params_types, is_output_params) -> SimpleNamespace:
    return SimpleNamespace(step_hint=STEP_HINT, model_params_types=model_params_types,
                           is_output_params=is_output_params)


def torch_run(name: str, problem: Problem, point: dict | None) -> tuple[dict, dict]:
    """(initial, trained) parameters of the torch twin, as Flax trees."""
    module = _import_file(f"twin_torch_{name}", find_submission(name, "pytorch").path)
    torch.manual_seed(0)
    model = problem.torch_model()
    layers = {layer: layer for layer, _ in model.named_children()}
    initial, _ = convert(model, layers)
    workload = twin_workload(torch_parameter_types(model), lambda key: key.split(".")[0] == OUTPUT_LAYER)
    hyperparameters = None if point is None else spec.make_hyperparameters(point)
    made = module.make_optimizer(model, hyperparameters, workload)
    optimizer, scheduler = made if isinstance(made, tuple) else (made, None)
    for x, y in problem.batches():
        optimizer.zero_grad()
        ((model(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean().backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return initial, convert(model, layers)[0]


def jax_run(name: str, problem: Problem, point: dict | None, initial: dict) -> dict:
    module = _import_file(f"twin_jax_{name}", find_submission(name, "jax").path)
    params = jax.tree_util.tree_map(jnp.asarray, initial)
    workload = twin_workload(jax_parameter_types(params), lambda path: path[0].key == OUTPUT_LAYER)
    hyperparameters = None if point is None else spec.make_hyperparameters(point)
    transformation = module.make_optimizer(params, hyperparameters, workload)
    state = transformation.init(params)

    @jax.jit
    def step(params, state, x, y):
        grads = jax.grad(lambda p: ((problem.jax_model(p, x) - y) ** 2).mean())(params)
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for x, y in problem.batches():
        params, state = step(params, state, x, y)
    return jax.tree_util.tree_map(np.asarray, params)


def leaves_by_path(tree: dict) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_twins_agree(name: str, problem: Problem, point: dict | None, tolerance: dict) -> None:
    initial, expected = torch_run(name, problem, point)
    got = leaves_by_path(jax_run(name, problem, point, initial))
    initial = leaves_by_path(initial)
    for path, want in leaves_by_path(expected).items():
        assert not np.allclose(want, initial[path], atol=1e-3), f"the optimizer did not move {path}"
        np.testing.assert_allclose(got[path], want, **tolerance, err_msg=f"{name} {path}")


@pytest.mark.parametrize(("name", "problem", "point", "tolerance"), TWINS,
                         ids=[f"{name}-{'self' if point is None else 'point'}" for name, _, point, _ in TWINS])
def test_jax_submission_matches_its_torch_twin_for_25_steps(name, problem, point, tolerance):
    assert_twins_agree(name, problem, point, tolerance)


def test_soap_leaves_dimensions_above_its_maximum_unrotated_as_torch(monkeypatch):
    """With the maximum at 8, the 9-wide dimensions of `hidden` and `head` get no basis, in both frameworks."""
    monkeypatch.setattr(soap_common, "MAX_PRECONDITIONER_DIM", 8)
    assert_twins_agree("soap", NETWORK, None, SOAP_TOLERANCE)


@pytest.mark.parametrize("shape", [(3, 4), (9, 8), (64, 192), (256, 64), (2, 1, 3, 1), (32, 16, 3, 3)])
def test_muon_orthogonalizes_as_torch_to_the_bfloat16_bit(shape):
    """In torch's layout: the same bfloat16 Newton-Schulz iterates, every rounding included."""
    update = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = muon_torch.orthogonalize(torch.from_numpy(update)).float().numpy()
    np.testing.assert_array_equal(np.asarray(jax.jit(muon_jax.orthogonalize)(jnp.asarray(update))), expected)


@pytest.mark.parametrize("workload_name", available_workloads("jax", suite="mini"))
def test_muon_gives_the_same_matrices_to_newton_schulz_as_torch(workload_name):
    """On each mini workload, the hidden matrices that Muon orthogonalises, in torch's layout (1-D, 2-D and
    transposed convolutions, dense kernels), are torch's: the same shapes, hence the same shape scales; the
    embeddings and the output layer go to AdamW in both."""
    torch_workload = load_workload(workload_name, "pytorch", DEFAULT_DATA_DIR)
    model, _ = torch_workload.init_model_fn(0)
    named = dict(model.named_parameters())
    expected = sorted(tuple(named[name].shape) for name in muon_torch.hidden_matrix_names(model, torch_workload))
    jax_workload = load_workload(workload_name, "jax", DEFAULT_DATA_DIR)
    params, _ = jax_workload.init_model_fn(0)
    labels = jax.tree_util.tree_leaves(muon_jax.hidden_matrix_labels(params, jax_workload))
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    got = sorted(tuple(p.transpose(muon_jax.torch_layout_axes(path, p)).shape)
                 for (path, p), label in zip(leaves, labels) if label == "muon")
    assert got == expected and expected


class HiddenLayer(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool, dropout_rate=None):
        return nn.Dense(3, name=OUTPUT_LAYER)(nn.tanh(nn.Dense(8, name="hidden")(x)))


# (submission, point): SOAP refreshes its eigenbases every 2 steps, across the interruption
RESUMED = [("prodigy", None), ("dadapt_adam", None), ("muon", None),
           ("soap", {"learning_rate": 3e-3, "one_minus_beta1": 0.05, "beta2": 0.95, "weight_decay": 0.01,
                     "precondition_frequency": 2, "warmup_factor": 0.05})]


@pytest.mark.parametrize(("name", "point"), RESUMED, ids=[name for name, _ in RESUMED])
def test_a_resumed_trial_ends_exactly_as_an_uninterrupted_one(name, point, tmp_path):
    """The toy workload with a hidden layer for 6 steps, at once or stopped after 3 and resumed from the
    checkpoint: the optimizer state (d and its sums, Muon's momenta inside optax.partition, SOAP's
    statistics and bases) survives the checkpoint."""
    toy = type(load_workload(str(TOY_WORKLOAD), "jax", tmp_path / "data"))
    workload_class = type("ToyWithHiddenLayer", (toy,), {"build_model": lambda self: HiddenLayer()})

    def trial(label: str, steps: int) -> TrialRecord:
        record = TrialRecord(tmp_path / label)
        outcome = run_trial(workload_class(tmp_path / "data"), load_submission(name, "jax"), point, 0, float("inf"),
                            record, NullProgress(), max_global_steps=steps, eval_every_steps=3,
                            checkpoint=tmp_path / label / "checkpoint" / "state.msgpack")
        assert outcome.error is None and not outcome.warnings, (outcome.error, outcome.warnings)
        return record

    whole = trial("whole", 6)
    trial("interrupted", 3)
    resumed = trial("interrupted", 6)
    assert [row["global_step"] for row in resumed.eval_rows] == [1, 3, 6]
    assert resumed.eval_rows[-1]["preemption_count"] == 1
    metrics = {k: v for k, v in whole.eval_rows[-1].items() if "/" in k}
    assert metrics == {k: v for k, v in resumed.eval_rows[-1].items() if "/" in k}
    assert metrics != {k: v for k, v in whole.eval_rows[1].items() if "/" in k}  # steps 4 to 6 changed the model

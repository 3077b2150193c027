"""The JAX curvature helpers (`harness/backends/jax/curvature.py`) with their real random draws:
Hessian-vector products are exact, Hutchinson estimates are unbiased, probes and sampled labels have
the right distributions, spatial averaging is torch's in Flax's layout; and trials of the stateful
submissions built on them resume exactly after an interruption."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from harness import spec
from harness.backends.jax import curvature
from harness.backends.torch.curvature import spatially_averaged as torch_spatially_averaged
from harness.discovery import load_submission, load_workload
from harness.records import TrialRecord
from harness.trial import run_trial
from support import TOY_WORKLOAD, NullProgress

N = 40_000
KEY = jax.random.PRNGKey(0)


def cubic(params):
    """A non-quadratic loss of a two-leaf tree (its Hessian depends on θ), with an aux output."""
    x, w = params["x"], params["w"]
    return jnp.sum(x**3) * jnp.sum(w**2) + jnp.sum(jnp.sin(x)[:, None] * w), "aux"


def test_gradient_and_hessian_product_are_exact():
    params = {"x": jnp.array([0.5, -1.0, 2.0]), "w": jnp.arange(6.0).reshape(3, 2) / 5}
    vector = {"x": jnp.array([1.0, 2.0, -1.0]), "w": jnp.ones((3, 2))}
    grads, product, aux = curvature.gradient_and_hessian_product(cubic, params, vector)
    flat, unflatten = jax.flatten_util.ravel_pytree(params)
    hessian = jax.hessian(lambda f: cubic(unflatten(f))[0])(flat)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(grads)[0],
                               jax.grad(lambda f: cubic(unflatten(f))[0])(flat), rtol=1e-6)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(product)[0],
                               hessian @ jax.flatten_util.ravel_pytree(vector)[0], rtol=1e-5)
    assert aux == "aux"


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_estimates_are_unbiased(distribution):
    a = jax.random.normal(jax.random.PRNGKey(1), (4, 4))
    hessian = a @ a.T + jnp.diag(jnp.arange(1.0, 5.0))  # L(θ) = ½ θᵀHθ

    def estimate(key):
        return curvature.hutchinson_diagonal(lambda p: (0.5 * p @ hessian @ p, None), jnp.ones(4), key,
                                             distribution)[1]

    estimates = jax.vmap(estimate)(jax.random.split(KEY, N))
    spread = jnp.sqrt(jnp.sum(hessian**2, axis=1) * (2 if distribution == "gaussian" else 1))  # ~ std of one estimate
    np.testing.assert_allclose(estimates.mean(0), jnp.diag(hessian), atol=float(5 * spread.max() / np.sqrt(N)))
    if distribution == "rademacher":  # z_i² = 1: each estimate is diag(H) plus off-diagonal terms of mean 0
        off_diagonal = jnp.sum(jnp.abs(hessian), 1) - jnp.diag(hessian)
        assert jnp.all(jnp.abs(estimates - jnp.diag(hessian)) <= off_diagonal + 1e-4)


def test_random_directions_have_the_right_distribution_per_leaf():
    params = {"a": jnp.zeros((N,)), "b": jnp.zeros((N,), jnp.bfloat16)}
    rademacher = curvature.random_directions(KEY, params, "rademacher")
    assert rademacher["b"].dtype == jnp.bfloat16 and rademacher["a"].shape == (N,)
    assert set(np.unique(np.asarray(rademacher["a"]))) == {-1.0, 1.0}
    assert abs(float(rademacher["a"].mean())) < 0.02
    gaussian = curvature.random_directions(KEY, params, "gaussian")
    assert abs(float(gaussian["a"].mean())) < 0.02 and float(gaussian["a"].std()) == pytest.approx(1.0, abs=0.02)
    assert abs(float(jnp.corrcoef(gaussian["a"], gaussian["b"].astype(jnp.float32))[0, 1])) < 0.02  # independent
    with pytest.raises(ValueError, match="rademacher"):
        curvature.random_directions(KEY, params, "uniform")


def _workload(loss_type: spec.LossType) -> SimpleNamespace:
    return SimpleNamespace(name="w", loss_type=loss_type)


def test_softmax_labels_follow_the_softmax():
    logits = jnp.broadcast_to(jnp.array([1.0, 0.0, -1.0]), (N, 3))
    labels = curvature.sampled_labels(_workload(spec.LossType.SOFTMAX_CROSS_ENTROPY), logits, KEY)
    frequencies = np.bincount(np.asarray(labels), minlength=3) / N
    np.testing.assert_allclose(frequencies, jax.nn.softmax(logits[0]), atol=0.01)


def test_sigmoid_labels_are_bernoulli_per_label():
    logits = jnp.broadcast_to(jnp.array([2.0, -1.0]), (N, 2))
    labels = curvature.sampled_labels(_workload(spec.LossType.SIGMOID_CROSS_ENTROPY), logits, KEY)
    assert set(np.unique(np.asarray(labels))) == {0.0, 1.0} and labels.dtype == logits.dtype
    np.testing.assert_allclose(labels.mean(0), jax.nn.sigmoid(logits[0]), atol=0.01)


def test_absolute_error_labels_are_laplace_around_the_output():
    outputs = jnp.full((N,), 3.0)
    noise = curvature.sampled_labels(_workload(spec.LossType.MEAN_ABSOLUTE_ERROR), outputs, KEY) - outputs
    assert float(jnp.median(noise)) == pytest.approx(0.0, abs=0.02)
    assert float(jnp.abs(noise).mean()) == pytest.approx(1.0, abs=0.02)  # E|X| = b = 1


def test_losses_without_a_sampler_name_the_alternative():
    with pytest.raises(ValueError, match="sophia_h"):
        curvature.sampled_labels(_workload(spec.LossType.MEAN_SQUARED_ERROR), jnp.zeros(3), KEY)


def test_a_workload_with_its_own_label_format_samples_them_itself():
    workload = SimpleNamespace(name="ctc", loss_type=spec.LossType.CTC_LOSS,
                               sample_labels=lambda logits, key: logits[0] + 1)
    np.testing.assert_array_equal(curvature.sampled_labels(workload, (jnp.array([1, 2]), None), KEY), [2, 3])


@pytest.mark.parametrize("torch_shape, to_flax", [((2, 3), (1, 0)), ((4, 3, 5), (2, 1, 0)),
                                                   ((4, 3, 3, 2), (2, 3, 1, 0))])
def test_spatial_averaging_is_torchs_in_flax_layout(torch_shape, to_flax):
    """Flax's kernels are torch's transposed: (in, out), (k, in, out), (k_h, k_w, in, out)."""
    v = torch.randn(torch_shape, generator=torch.Generator().manual_seed(0))
    expected = torch_spatially_averaged([v])[0].numpy().transpose(to_flax)
    got = curvature.spatially_averaged({"kernel": jnp.asarray(v.numpy().transpose(to_flax))})["kernel"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="5-D"):
        curvature.spatially_averaged([jnp.zeros((1, 1, 1, 1, 1))])


def test_invalid_hyperparameters_are_named():
    with pytest.raises(ValueError, match="hessian_power=1.5"):
        curvature.scale_by_adahessian(0.9, 0.999, 1e-4, 1.5)
    with pytest.raises(ValueError, match="rho=0"):
        curvature.scale_by_sophia(0.965, 0.99, 0.0, 1e-12)


def _trial(tmp_path, name: str, run_name: str, steps: int):
    record = TrialRecord(tmp_path / run_name)
    outcome = run_trial(load_workload(str(TOY_WORKLOAD), "jax", tmp_path / "data"), load_submission(name, "jax"), None,
                        0, float("inf"), record, NullProgress(), max_global_steps=steps, eval_every_steps=4,
                        checkpoint=tmp_path / run_name / "checkpoint" / "state.msgpack")
    assert outcome.error is None and outcome.warnings == [], (outcome.error, outcome.warnings)
    return record


@pytest.mark.parametrize("name", ["sophia_g", "sophia_h", "adahessian"])
def test_a_resumed_trial_ends_exactly_as_an_uninterrupted_one(tmp_path, name):
    """Interrupted after step 4 (m, h or v and the step counts in the checkpoint), resumed to step 12, past
    Sophia's second curvature refresh (step 10)."""
    whole = _trial(tmp_path, name, "whole", 12)
    _trial(tmp_path, name, "interrupted", 4)
    resumed = _trial(tmp_path, name, "interrupted", 12)
    assert [row["global_step"] for row in resumed.eval_rows] == [1, 4, 8, 12]
    assert resumed.eval_rows[-1]["preemption_count"] == 1
    metrics = {k: v for k, v in whole.eval_rows[-1].items() if "/" in k}
    assert metrics == {k: v for k, v in resumed.eval_rows[-1].items() if "/" in k}
    assert metrics["train/loss"] < whole.eval_rows[0]["train/loss"]  # it trained

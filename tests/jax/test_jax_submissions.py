"""Each JAX submission of the library against its torch twin: 25 steps of the same problem (a linear
least-squares model, the same batches, the same initial weights, the self-tuning point) give the
same parameters within float32 tolerance."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from harness.discovery import find_submission, _import_file

STEPS, STEP_HINT = 25, 40  # warmup and the start of the cosine decay fall inside the 25 steps
TWINS = ["nadamw", "adamw", "sgd_nesterov", "lion"]


def batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=(4, 3)).astype(np.float32)
    for _ in range(STEPS):
        x = rng.normal(size=(16, 4)).astype(np.float32)
        yield x, x @ true_w + 0.1 * rng.normal(size=(16, 3)).astype(np.float32)


def torch_run(name: str) -> dict[str, np.ndarray]:
    module = _import_file(f"twin_torch_{name}", find_submission(name, "pytorch").path)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    initial = {"kernel": model.weight.detach().numpy().T.copy(), "bias": model.bias.detach().numpy().copy()}
    made = module.make_optimizer(model, None, SimpleNamespace(step_hint=STEP_HINT))
    optimizer, scheduler = made if isinstance(made, tuple) else (made, None)
    for x, y in batches():
        optimizer.zero_grad()
        ((model(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean().backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return initial, {"kernel": model.weight.detach().numpy().T, "bias": model.bias.detach().numpy()}


def jax_run(name: str, initial: dict) -> dict[str, np.ndarray]:
    module = _import_file(f"twin_jax_{name}", find_submission(name, "jax").path)
    params = jax.tree_util.tree_map(jnp.asarray, initial)
    transformation = module.make_optimizer(params, None, SimpleNamespace(step_hint=STEP_HINT))
    state = transformation.init(params)

    @jax.jit
    def step(params, state, x, y):
        grads = jax.grad(lambda p: ((x @ p["kernel"] + p["bias"] - y) ** 2).mean())(params)
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for x, y in batches():
        params, state = step(params, state, x, y)
    return jax.tree_util.tree_map(np.asarray, params)


@pytest.mark.parametrize("name", TWINS)
def test_jax_submission_matches_its_torch_twin_for_25_steps(name):
    initial, expected = torch_run(name)
    got = jax_run(name, initial)
    for key in expected:
        assert not np.allclose(expected[key], initial[key], atol=1e-3), "the optimizer did not move"
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-4, atol=2e-6, err_msg=f"{name} {key}")

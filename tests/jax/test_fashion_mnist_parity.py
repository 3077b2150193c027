"""fashion_mnist in JAX against PyTorch: the same initial weights (torch's, converted) and the same
batch give the same logits and loss, in evaluation and training mode, and one AdamW step gives the
same parameters. Tolerances: float32 convolutions summed in another order (XLA against oneDNN)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from harness import spec
from harness.discovery import load_workload
from torch_to_flax import convert

BLOCK_LAYERS = ("conv1", "bn1", "conv2", "bn2")


def module_paths(model) -> dict[str, str]:
    paths = {"stem.0": "conv_stem", "stem.1": "bn_stem", "head": "head"}
    for i, block in enumerate(model.blocks):
        paths.update({f"blocks.{i}.{name}": f"blocks_{i}/{name}" for name in BLOCK_LAYERS})
        if len(block.shortcut):
            paths.update({f"blocks.{i}.shortcut.0": f"blocks_{i}/conv_shortcut",
                          f"blocks.{i}.shortcut.1": f"blocks_{i}/bn_shortcut"})
    return paths


@pytest.fixture(scope="module")
def pair():
    torch_workload = load_workload("fashion_mnist", "pytorch", "")
    jax_workload = load_workload("fashion_mnist", "jax", "")
    model, _ = torch_workload.init_model_fn(3)
    jax_params, jax_state = jax_workload.init_model_fn(3)
    params, stats = convert(model, module_paths(model))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
    batch = torch_workload.host_batch("train", np.arange(64))
    return torch_workload, model, jax_workload, jax.device_put(params), {"batch_stats": jax.device_put(stats)}, batch


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_batch_give_the_same_logits_and_loss(pair, mode):
    torch_workload, model, jax_workload, params, state, batch = pair
    torch_batch = torch_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, update_batch_norm=False)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits, label_smoothing=0.1)
    jax_batch = jax_workload.to_device(batch)
    jax_logits, _ = jax_workload.model_fn(params, jax_batch, state, mode, 0, update_batch_norm=False)
    jax_loss = jax_workload.loss_fn(jax_batch["targets"], jax_logits, label_smoothing=0.1)
    np.testing.assert_allclose(np.asarray(jax_logits), logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
    assert float(jax_loss["n_valid_examples"]) == float(loss["n_valid_examples"]) == 64


def test_one_adamw_step_gives_the_same_parameters(pair):
    torch_workload, model, jax_workload, params, state, batch = pair
    lr, wd = 1e-3, 0.1
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    torch_batch = torch_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, spec.ForwardPassMode.TRAIN, 0, update_batch_norm=True)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    optimizer.step()
    expected, _ = convert(model, module_paths(model))

    jax_batch = jax_workload.to_device(batch)

    def mean_loss(p):
        out, _ = jax_workload.model_fn(p, jax_batch, state, spec.ForwardPassMode.TRAIN, 0, update_batch_norm=True)
        summed = jax_workload.loss_fn(jax_batch["targets"], out)
        return summed["summed"] / summed["n_valid_examples"]

    transformation = optax.adamw(lr, weight_decay=wd)
    grads = jax.grad(mean_loss)(params)
    updates, _ = transformation.update(grads, transformation.init(params), params)
    stepped = optax.apply_updates(params, updates)
    # Adam's first step moves every weight by about lr (the sign of its gradient): compare the moves.
    moved = jax.tree_util.tree_map(lambda new, old: np.asarray(new - old), stepped, params)
    expected_moves = jax.tree_util.tree_map(lambda new, old: new - np.asarray(old), expected, params)
    for got, want in zip(jax.tree_util.tree_leaves(moved), jax.tree_util.tree_leaves(expected_moves)):
        agree = np.isclose(got, want, rtol=1e-3, atol=1e-6 * lr / 1e-3)
        assert agree.mean() > 0.99  # a gradient within float32 noise of 0 may take either sign
    assert jnp.abs(jax.tree_util.tree_leaves(moved)[0]).max() > 0.5 * lr

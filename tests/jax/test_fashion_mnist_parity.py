"""fashion_mnist in JAX against PyTorch: the same initial weights (torch's, converted) and the same
batch give the same logits and loss, in evaluation and training mode, and one AdamW step gives the
same parameters. Tolerances: float32 convolutions summed in another order (XLA against oneDNN)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from harness import spec
from harness.discovery import load_workload
import parity
from harness.prepare_data import DEFAULT_DATA_DIR
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
    torch_workload = load_workload("fashion_mnist", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("fashion_mnist", "jax", DEFAULT_DATA_DIR)
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
    moved, expected = parity.adamw_moves(torch_workload, model, jax_workload, params, state, batch,
                                         lambda stepped: convert(stepped, module_paths(stepped))[0])
    parity.assert_moves_agree(moved, expected)
    assert abs(moved["conv_stem"]["kernel"]).max() > 0.5 * parity.LR

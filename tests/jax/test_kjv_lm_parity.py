"""kjv_lm in JAX against PyTorch: the same initial weights (torch's, converted) and the same batch give
the same logits and loss, in evaluation and training mode, also where LayerNorm's ε matters; one
AdamW step gives the same parameters; evaluation gives the same metrics; JAX's own initialisation
draws from torch's distributions. Tolerances: float32 matrix products, softmaxes and LayerNorms
summed in another order (XLA against torch's CPU kernels): logits of order 1 differ by about 1e-6,
hence rtol and atol 1e-5; losses and metrics rel 1e-5."""

from __future__ import annotations

import copy


import jax
import numpy as np
import pytest
import torch

from harness import spec
from harness.discovery import load_workload
from harness.prepare_data import DEFAULT_DATA_DIR
import parity
from torch_to_flax import dense_kernel, indexed_path as flax_path, set_path

SEED = 3


def convert(model: torch.nn.Module) -> dict:
    """Flax params of the torch model: Linear, LayerNorm and Embedding layers at their mapped paths."""
    params, converted = {}, set()
    for name, layer in model.named_modules():
        path = flax_path(name)
        if isinstance(layer, torch.nn.Linear):
            set_path(params, f"{path}/kernel", dense_kernel(layer.weight))
            set_path(params, f"{path}/bias", layer.bias.detach().numpy())
        elif isinstance(layer, torch.nn.LayerNorm):
            set_path(params, f"{path}/scale", layer.weight.detach().numpy())
            set_path(params, f"{path}/bias", layer.bias.detach().numpy())
        elif isinstance(layer, torch.nn.Embedding):
            set_path(params, f"{path}/embedding", layer.weight.detach().numpy())
        else:
            continue
        converted.update(f"{name}.{p}" for p, _ in layer.named_parameters(recurse=False))
    assert converted == {name for name, _ in model.named_parameters()}, "some torch parameters have no Flax path"
    return params


def leaf_at(tree: dict, path: str):
    for name in path.split("/"):
        tree = tree[name]
    return tree


@pytest.fixture(scope="module")
def pair():
    torch_workload = load_workload("kjv_lm", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("kjv_lm", "jax", DEFAULT_DATA_DIR)
    model, _ = torch_workload.init_model_fn(SEED)
    jax_params, _ = jax_workload.init_model_fn(SEED)
    params = convert(model)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
    batch = torch_workload.host_batch("train", np.arange(8))
    return torch_workload, model, jax_workload, jax_params, jax.device_put(params), batch


def test_parameter_types_match_torch(pair):
    torch_workload, model, jax_workload, *_ = pair
    layers = dict(model.named_modules())
    weight = {torch.nn.Linear: "kernel", torch.nn.LayerNorm: "scale", torch.nn.Embedding: "embedding"}
    for torch_name, kind in torch_workload.model_params_types.items():
        module, leaf = torch_name.rsplit(".", 1)
        flax_leaf = weight[type(layers[module])] if leaf == "weight" else leaf
        assert leaf_at(jax_workload.model_params_types, f"{flax_path(module)}/{flax_leaf}") == kind, torch_name


@pytest.mark.parametrize("path, torch_name", [
    ("token_embedding/embedding", "token_embedding.weight"),
    ("blocks_0/attention/qkv/kernel", "blocks.0.attention.qkv.weight"),
    ("blocks_1/mlp_2/kernel", "blocks.1.mlp.2.weight"),
    ("blocks_0/mlp_0/bias", "blocks.0.mlp.0.bias"),
])
def test_jax_initialisation_draws_from_torchs_distributions(pair, path, torch_name):
    _, model, _, jax_params, _, _ = pair
    jax_value, torch_value = np.asarray(leaf_at(jax_params, path)), dict(model.named_parameters())[torch_name]
    assert abs(jax_value.mean()) < 0.1 * torch_value.std().item()
    assert jax_value.std() == pytest.approx(torch_value.std().item(), rel=0.1)


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_batch_give_the_same_logits_and_loss(pair, mode):
    torch_workload, model, jax_workload, _, params, batch = pair
    torch_batch = torch_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, update_batch_norm=False, dropout_rate=0.0)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits, label_smoothing=0.1)
    jax_batch = jax_workload.to_device(batch)
    jax_logits, _ = jax_workload.model_fn(params, jax_batch, {}, mode, 0, update_batch_norm=False, dropout_rate=0.0)
    jax_loss = jax_workload.loss_fn(jax_batch["targets"], jax_logits, label_smoothing=0.1)
    np.testing.assert_allclose(np.asarray(jax_logits), logits.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
    assert float(jax_loss["n_valid_examples"]) == float(loss["n_valid_examples"]) == 8 * 128


def test_the_layer_norms_epsilon_matches_on_small_activations(pair):
    torch_workload, model, jax_workload, _, _, batch = pair
    model = copy.deepcopy(model)
    with torch.no_grad():  # LayerNorm inputs of variance ~1e-6, below its ε of 1e-5
        for embedding in (model.token_embedding, model.position_embedding):
            embedding.weight.mul_(1e-3)
    mode = spec.ForwardPassMode.EVAL
    logits, _ = torch_workload.model_fn(model, torch_workload.to_device(batch), None, mode, 0, False)
    jax_logits, _ = jax_workload.model_fn(jax.device_put(convert(model)), jax_workload.to_device(batch), {}, mode, 0,
                                          False)
    np.testing.assert_allclose(np.asarray(jax_logits), logits.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_one_adamw_step_gives_the_same_parameters(pair):
    torch_workload, model, jax_workload, _, params, batch = pair
    moved, expected = parity.adamw_moves(torch_workload, model, jax_workload, params, {}, batch, convert)
    parity.assert_moves_agree(moved, expected)
    assert np.abs(leaf_at(moved, "head/kernel")).max() > 0.5 * parity.LR


def test_evaluation_gives_the_same_metrics(pair):
    torch_workload, model, jax_workload, _, params, _ = pair
    metrics = torch_workload._eval_model_on_split("validation", 64, 32, model, None, 0, DEFAULT_DATA_DIR)
    jax_metrics = jax_workload._eval_model_on_split("validation", 64, 32, params, {}, 0, DEFAULT_DATA_DIR)
    assert jax_metrics.keys() == metrics.keys() == {"loss", "ppl"}
    for key in metrics:
        assert jax_metrics[key] == pytest.approx(metrics[key], rel=1e-5), key

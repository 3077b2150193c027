"""adult_ctr in JAX against PyTorch: the same initial weights (torch's, converted) and the same batch
give the same logits and loss, in evaluation and training mode, one AdamW step moves the parameters
the same, evaluation on the validation split gives the same metrics, and JAX's own initialisation
draws from torch's distributions. Tolerances: float32 matrix products summed in another order
(XLA against oneDNN), as in the fashion_mnist test."""

from __future__ import annotations


import jax
import numpy as np
import pytest
import torch

from harness import spec
from harness.discovery import load_workload
from harness.prepare_data import DEFAULT_DATA_DIR
import parity
from torch_to_flax import dense_kernel, set_path

SEED = 3


def to_flax(model: torch.nn.Module) -> dict:
    """The DLRM's parameters at the Flax paths of `jax.py`: torch's `top_mlp.2` is `top_mlp_2`."""
    params = {}
    for name, layer in model.named_modules():
        path = name.replace(".", "_")
        if isinstance(layer, torch.nn.Linear):
            set_path(params, f"{path}/kernel", dense_kernel(layer.weight))
            set_path(params, f"{path}/bias", layer.bias.detach().numpy())
        elif isinstance(layer, torch.nn.Embedding):
            set_path(params, f"{path}/embedding", layer.weight.detach().numpy())
    return params


@pytest.fixture(scope="module")
def pair():
    torch_workload = load_workload("adult_ctr", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("adult_ctr", "jax", DEFAULT_DATA_DIR)
    model, _ = torch_workload.init_model_fn(SEED)
    jax_params, jax_state = jax_workload.init_model_fn(SEED)
    params = to_flax(model)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
    assert sum(p.size for p in jax.tree_util.tree_leaves(params)) == sum(p.numel() for p in model.parameters())
    assert jax_state == {}
    batch = torch_workload.host_batch("train", np.arange(256))
    return torch_workload, model, jax_workload, jax_params, jax.device_put(params), batch


def test_parameter_types_match_torch(pair):
    torch_workload, _, jax_workload, *_ = pair
    flat = {"/".join(str(k.key) for k in path): kind
            for path, kind in jax.tree_util.tree_leaves_with_path(jax_workload._param_types)}
    for name, kind in torch_workload._param_types.items():
        module, leaf = name.rsplit(".", 1)
        leaf = "embedding" if module == "embedding" else {"weight": "kernel"}.get(leaf, leaf)
        assert flat[f"{module.replace('.', '_')}/{leaf}"] == kind, name


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_batch_give_the_same_logits_and_loss(pair, mode):
    torch_workload, model, jax_workload, _, params, batch = pair
    torch_batch = torch_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, update_batch_norm=False, dropout_rate=0.0)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits, label_smoothing=0.1)
    jax_batch = jax_workload.to_device(batch)
    jax_logits, _ = jax_workload.model_fn(params, jax_batch, {}, mode, 0, update_batch_norm=False, dropout_rate=0.0)
    jax_loss = jax_workload.loss_fn(jax_batch["targets"], jax_logits, label_smoothing=0.1)
    assert jax_logits.shape == logits.shape == (256,)
    np.testing.assert_allclose(np.asarray(jax_logits), logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
    assert float(jax_loss["n_valid_examples"]) == float(loss["n_valid_examples"]) == 256


def test_one_adamw_step_gives_the_same_parameters(pair):
    torch_workload, model, jax_workload, _, params, batch = pair
    moved, expected = parity.adamw_moves(torch_workload, model, jax_workload, params, {}, batch, to_flax)
    parity.assert_moves_agree(moved, expected)
    assert np.abs(moved["head"]["kernel"]).max() > 0.5 * parity.LR


def test_validation_metrics_match(pair):
    torch_workload, model, jax_workload, _, params, _ = pair
    n = 1000
    metrics = torch_workload._eval_model_on_split("validation", n, 500, model, None, 0, DEFAULT_DATA_DIR)
    jax_metrics = jax_workload._eval_model_on_split("validation", n, 500, params, {}, 0, DEFAULT_DATA_DIR)
    assert jax_metrics["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
    # a logit within float32 noise of 0 may fall on either side: at most one example's difference
    assert jax_metrics["accuracy"] == pytest.approx(metrics["accuracy"], abs=1.5 / n)


def test_jax_initialisation_draws_from_torch_distributions(pair):
    _, model, _, jax_params, *_ = pair
    torch_params = to_flax(model)
    for module, leaf in (("embedding", "embedding"), ("bottom_mlp_0", "kernel"), ("top_mlp_0", "kernel"),
                         ("top_mlp_0", "bias"), ("top_mlp_2", "bias")):
        ours, theirs = np.asarray(jax_params[module][leaf]), torch_params[module][leaf]
        assert np.std(ours) == pytest.approx(np.std(theirs), rel=0.1), (module, leaf)
        assert np.mean(ours) == pytest.approx(np.mean(theirs), abs=0.1 * float(np.std(theirs))), (module, leaf)
    assert np.asarray(jax_params["embedding"]["embedding"]).min() >= 0

"""mri_reconstruction in JAX against PyTorch: the same initial weights (torch's, converted) and the
same batch give the same reconstructions and loss, in evaluation and training mode, one AdamW step
gives the same parameters, and evaluation the same SSIM and loss; JAX's own initialisation draws from
torch's distributions. Tolerances: float32 convolutions summed in another order (XLA against oneDNN)
through fourteen instance-normalised layers."""

from __future__ import annotations


import jax
import numpy as np
import pytest
import torch

from harness import spec
from harness.discovery import load_workload
from harness.prepare_data import DEFAULT_DATA_DIR
import parity
from torch_to_flax import conv_kernel, set_path

BLOCK_LAYERS = {"0": "conv1", "4": "conv2"}  # the convolutions' indices in torch's ConvBlock


def flax_path(torch_name: str) -> str:
    """'down.1.4.weight' -> 'down_1/conv2/kernel', 'up_transpose.0.0.weight' -> 'up_transpose_0/conv/kernel'."""
    *module, leaf = torch_name.split(".")
    leaf = "kernel" if leaf == "weight" else leaf
    if module[0] == "head":
        return f"head/{leaf}"
    if module[0] == "up_transpose":
        return f"up_transpose_{module[1]}/conv/{leaf}"
    if module[0] == "bottleneck":
        return f"bottleneck/{BLOCK_LAYERS[module[1]]}/{leaf}"
    return f"{module[0]}_{module[1]}/{BLOCK_LAYERS[module[2]]}/{leaf}"


def convert(model: torch.nn.Module) -> dict:
    """The U-Net's parameters as Flax params: (out, in, kh, kw) kernels as (kh, kw, in, out), and the
    transposed convolutions' (in, out, kh, kw) as (kh, kw, out, in), the layout of `transpose_kernel`."""
    params = {}
    for name, weight in model.named_parameters():
        set_path(params, flax_path(name), conv_kernel(weight) if weight.dim() == 4 else weight.detach().numpy())
    return params


def flat(tree: dict) -> dict:
    """A Flax tree's leaves keyed by their '/'-joined paths."""
    return {"/".join(key.key for key in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def pair():
    torch_workload = load_workload("mri_reconstruction", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("mri_reconstruction", "jax", DEFAULT_DATA_DIR)
    model, _ = torch_workload.init_model_fn(3)
    jax_params, jax_state = jax_workload.init_model_fn(3)
    params = convert(model)
    assert jax_state == {}  # instance norm keeps no statistics
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
    torch_types = {flax_path(name): ptype for name, ptype in torch_workload.model_params_types.items()}
    assert flat(jax_workload.model_params_types) == torch_types
    batch = torch_workload.host_batch("train", np.arange(8))
    return torch_workload, model, jax_workload, jax_params, jax.device_put(params), batch


def test_jax_initialisation_draws_from_torchs_distributions(pair):
    torch_workload, model, jax_workload, jax_params, params, batch = pair
    for name in ("down.0.4.weight", "bottleneck.4.weight", "up_transpose.2.0.weight", "up.0.0.weight"):
        jax_kernel = flat(jax_params)[flax_path(name)]
        torch_std = model.get_parameter(name).std().item()
        assert float(np.std(jax_kernel)) == pytest.approx(torch_std, rel=0.1), name
        assert np.abs(jax_kernel).max() <= 2 * torch_std / 0.87962566 * 1.1  # truncated at 2 std


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_batch_give_the_same_reconstructions_and_loss(pair, mode):
    torch_workload, model, jax_workload, _, params, batch = pair
    torch_batch = torch_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, update_batch_norm=False)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits)
    jax_batch = jax_workload.to_device(batch)
    jax_logits, _ = jax_workload.model_fn(params, jax_batch, {}, mode, 0, update_batch_norm=False)
    jax_loss = jax_workload.loss_fn(jax_batch["targets"], jax_logits)
    assert jax_logits.shape == batch["targets"].shape
    np.testing.assert_allclose(np.asarray(jax_logits), logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
    assert float(jax_loss["n_valid_examples"]) == float(loss["n_valid_examples"]) == 8


def test_evaluation_gives_the_same_ssim_and_loss(pair):
    torch_workload, model, jax_workload, _, params, _ = pair
    torch_metrics = torch_workload._eval_model_on_split("validation", 48, 16, model, None, 0, "")
    jax_metrics = jax_workload._eval_model_on_split("validation", 48, 16, params, {}, 0, "")
    assert set(jax_metrics) == set(torch_metrics) == {"ssim", "loss"}
    assert jax_metrics["ssim"] == pytest.approx(torch_metrics["ssim"], rel=1e-5)
    assert jax_metrics["loss"] == pytest.approx(torch_metrics["loss"], rel=1e-5)


def test_one_adamw_step_gives_the_same_parameters(pair):
    torch_workload, model, jax_workload, _, params, batch = pair
    moved, expected = parity.adamw_moves(torch_workload, model, jax_workload, params, {}, batch, convert)
    parity.assert_moves_agree(moved, expected)
    assert np.abs(jax.tree_util.tree_leaves(moved)[0]).max() > 0.5 * parity.LR
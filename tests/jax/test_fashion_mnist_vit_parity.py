"""fashion_mnist_vit in JAX against PyTorch: the same weights (torch's, perturbed so that every
parameter shapes the output, then converted) and the same batch give the same logits and loss, in
evaluation and training mode; the AlgoPerf parameter types are torch's; one AdamW step moves the
parameters the same; an evaluation gives the same metrics; and each framework's own initialisation
draws from the same distributions. Tolerances are float32's: the same sums in another order (XLA
against oneDNN and torch's attention kernel) differ by about 2e-7 in the logits here."""

from __future__ import annotations


import jax
import numpy as np
import pytest
import torch

from harness import spec
from harness.discovery import load_workload
from harness.prepare_data import DEFAULT_DATA_DIR
import parity
from torch_to_flax import conv_kernel, dense_kernel, set_path

N = 64


def flax_path(torch_name: str) -> str:
    """torch's `blocks.0.attention.qkv`, `blocks.0.mlp.3` as Flax's `blocks_0/attention/qkv`, `blocks_0/mlp_3`."""
    return torch_name.replace("blocks.", "blocks_").replace(".mlp.", "/mlp_").replace(".", "/")


def convert(model: torch.nn.Module) -> dict:
    """The ViT's parameters at their Flax paths: convolution and dense kernels transposed, LayerNorm
    weights as `scale`; every torch parameter placed exactly once."""
    params, placed = {}, 0
    for name, layer in model.named_modules():
        if isinstance(layer, torch.nn.Conv2d):
            weight = "kernel", conv_kernel(layer.weight)
        elif isinstance(layer, torch.nn.Linear):
            weight = "kernel", dense_kernel(layer.weight)
        elif isinstance(layer, torch.nn.LayerNorm):
            weight = "scale", layer.weight.detach().numpy()
        else:
            continue
        for leaf, value in (weight, ("bias", layer.bias.detach().numpy())):
            set_path(params, f"{flax_path(name)}/{leaf}", value)
            placed += 1
    assert placed == len(list(model.parameters()))
    return params


@pytest.fixture(scope="module")
def pair():
    torch_workload = load_workload("fashion_mnist_vit", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("fashion_mnist_vit", "jax", DEFAULT_DATA_DIR)
    model, _ = torch_workload.init_model_fn(3)
    jax_params, jax_state = jax_workload.init_model_fn(3)
    with torch.no_grad():  # the head starts at 0 and biases at 0 or 1e-6: perturbed, they all reach the logits
        generator = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    params = convert(model)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
    assert jax_state == {}
    batch = torch_workload.host_batch("train", np.arange(N))
    return torch_workload, model, jax_workload, jax.device_put(params), batch


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_batch_give_the_same_logits_and_loss(pair, mode):
    torch_workload, model, jax_workload, params, batch = pair
    torch_batch = torch_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, False, dropout_rate=0.0)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits, label_smoothing=0.1)
    jax_batch = jax_workload.to_device(batch)
    jax_logits, _ = jax_workload.model_fn(params, jax_batch, {}, mode, 0, False, dropout_rate=0.0)
    jax_loss = jax_workload.loss_fn(jax_batch["targets"], jax_logits, label_smoothing=0.1)
    assert logits.detach().abs().mean() > 0.1  # logits that the weights shape, not the zero head's
    np.testing.assert_allclose(np.asarray(jax_logits), logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
    assert float(jax_loss["n_valid_examples"]) == float(loss["n_valid_examples"]) == N


def test_parameter_types_are_torchs(pair):
    torch_workload, _, jax_workload, _, _ = pair
    expected = {}
    for name, kind in torch_workload.model_params_types.items():
        module, leaf = name.rsplit(".", 1)
        leaf = "bias" if leaf == "bias" else "scale" if kind == spec.ParameterType.LAYER_NORM_SCALE else "kernel"
        expected[f"{flax_path(module)}/{leaf}"] = kind
    types = {"/".join(entry.key for entry in path): (path, kind)
             for path, kind in jax.tree_util.tree_leaves_with_path(jax_workload.model_params_types)}
    assert {name: kind for name, (_, kind) in types.items()} == expected
    outputs = {name for name, (path, _) in types.items() if jax_workload.is_output_params(path)}
    assert outputs == {"head/kernel", "head/bias"}


def test_one_adamw_step_moves_the_parameters_the_same(pair):
    torch_workload, model, jax_workload, params, batch = pair
    moved, expected = parity.adamw_moves(torch_workload, model, jax_workload, params, {}, batch, convert)
    parity.assert_moves_agree(moved, expected)
    assert np.abs(moved["patch_embedding"]["kernel"]).max() > 0.5 * parity.LR


def test_an_evaluation_gives_the_same_metrics(pair):
    torch_workload, model, jax_workload, params, _ = pair
    torch_metrics = torch_workload._eval_model_on_split("validation", 2048, 256, model, None, 0, DEFAULT_DATA_DIR)
    jax_metrics = jax_workload._eval_model_on_split("validation", 2048, 256, params, {}, 0, DEFAULT_DATA_DIR)
    assert set(jax_metrics) == set(torch_metrics) == {"loss", "error_rate", "accuracy"}
    assert jax_metrics["loss"] == pytest.approx(torch_metrics["loss"], rel=1e-5)
    assert 0.05 < torch_metrics["error_rate"] < 0.95
    # An example whose top two logits are within float32 noise of each other may be counted either way.
    assert jax_metrics["error_rate"] == pytest.approx(torch_metrics["error_rate"], abs=1.5 / 2048)


def test_each_framework_initialises_from_the_same_distributions():
    torch_workload = load_workload("fashion_mnist_vit", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("fashion_mnist_vit", "jax", DEFAULT_DATA_DIR)
    torch_params = convert(torch_workload.init_model_fn(0)[0])
    jax_params = jax.device_get(jax_workload.init_model_fn(0)[0])
    blocks = [f"blocks_{i}" for i in range(4)]

    def leaf(tree, path):
        for name in path.split("/"):
            tree = tree[name]
        return np.asarray(tree)

    def pooled(tree, paths):
        return np.concatenate([leaf(tree, path).ravel() for path in paths])

    for paths in (["patch_embedding/kernel"],  # torch's default for a convolution, U(±1/√fan_in)
                  ["pre_logits/kernel"],  # torch's default for a Linear
                  [f"{b}/attention/qkv/kernel" for b in blocks],  # Xavier-uniform
                  [f"{b}/mlp_0/kernel" for b in blocks],  # Xavier-uniform
                  [f"{b}/{mlp}/bias" for b in blocks for mlp in ("mlp_0", "mlp_3")]):  # N(0, 1e-6²)
        want, got = pooled(torch_params, paths).std(), pooled(jax_params, paths).std()
        assert got == pytest.approx(want, rel=0.1), paths
    constants = ["ln/scale", "ln/bias", "head/kernel", "head/bias"] + [
        f"{b}/{path}" for b in blocks for path in ("ln1/scale", "ln1/bias", "ln2/scale", "ln2/bias",
                                                   "attention/qkv/bias", "attention/out/bias")]
    for path in constants:  # LayerNorm 1 and 0, attention biases and the head 0
        np.testing.assert_array_equal(leaf(jax_params, path), leaf(torch_params, path), err_msg=path)

"""The Fashion-MNIST ViT workload: output shape, AlgoPerf parameter types, and learning on real data."""

from __future__ import annotations

from pathlib import Path

import torch

from support import nadamw_on_one_batch
from harness import spec
from harness.discovery import load_workload
from workloads.fashion_mnist.torch import Workload as ResNetWorkload

DATA_DIR = Path.home() / ".cache" / "timetrial" / "data"
T = spec.ParameterType


def test_logits_have_one_row_per_image_and_ten_classes():
    workload = load_workload("fashion_mnist_vit", "pytorch", DATA_DIR)
    model, _ = workload.init_model_fn(0)
    logits, _ = workload.model_fn(model, {"inputs": torch.randn(3, 1, 28, 28)}, None, spec.ForwardPassMode.EVAL, 0,
                                  update_batch_norm=False)
    assert logits.shape == (3, 10)


def test_parameter_types_name_attention_layer_norm_and_patch_embedding():
    workload = load_workload("fashion_mnist_vit", "pytorch", DATA_DIR)
    model, _ = workload.init_model_fn(0)
    types = workload.model_params_types
    assert set(types) == set(workload.param_shapes) == {name for name, _ in model.named_parameters()}
    assert types["patch_embedding.weight"] == T.CONV_WEIGHT
    assert types["blocks.0.attention.qkv.weight"] == T.ATTENTION_QKV
    assert types["blocks.0.attention.out.weight"] == T.ATTENTION_OUT
    assert types["blocks.0.attention.qkv.bias"] == types["blocks.0.attention.out.bias"] == T.ATTENTION_BIAS
    assert types["blocks.0.ln1.weight"] == types["ln.weight"] == T.LAYER_NORM_SCALE
    assert types["blocks.0.ln1.bias"] == types["ln.bias"] == T.LAYER_NORM_BIAS
    assert types["blocks.0.mlp.0.weight"] == types["head.weight"] == T.WEIGHT
    assert types["blocks.0.mlp.0.bias"] == types["head.bias"] == T.BIAS
    assert workload.is_output_params("head.weight") and not workload.is_output_params("pre_logits.weight")


def test_shares_the_resnet_workloads_data_and_splits():
    vit = load_workload("fashion_mnist_vit", "pytorch", DATA_DIR)
    resnet = ResNetWorkload(DATA_DIR)
    assert vit.data_hash() == resnet.data_hash()
    for split in ("train", "validation", "test"):
        assert (vit.load_splits()[split]["targets"] == resnet.load_splits()[split]["targets"]).all()
    assert vit.suite == "mini" and vit.num_train_examples == resnet.num_train_examples


def test_a_few_nadamw_steps_on_real_data_lower_the_loss():
    workload = load_workload("fashion_mnist_vit", "pytorch", DATA_DIR)
    workload.step_hint = 40  # a short schedule: warmup is over after 4 steps
    batch = next(workload._build_input_queue(0, "train", str(DATA_DIR), 128))  # the same batch every step: its loss must fall
    model, model_state, before, after = nadamw_on_one_batch(workload, batch, 20)
    assert after < 0.8 * before, (before, after)

"""nci_molecules in JAX against PyTorch: the same initial weights (torch's, converted) and the same batch
give the same logits and loss, in evaluation and training mode, whether JAX's batch is padded to its
static shapes or not; padding changes neither the loss nor its gradient; one AdamW step gives the same
parameters; evaluation gives the same metrics; JAX's own initialisation draws from torch's
distributions and its parameter types are torch's.

Tolerances: float32 matrix products, LayerNorms and sums over a graph's nodes and edges taken in
another order (XLA's scatter-add against torch's `index_add_`) through three message-passing steps:
logits of order 1 differ by about 1e-6, hence rtol and atol 1e-5; the loss and its summed terms rel
1e-5. Mean average precision ranks the logits: two logits within float32 noise of each other may swap,
moving it by far less than 1e-4 (abs 1e-4). Padding leaves a real graph's arithmetic as it is, only
adding zero terms to sums: gradients with and without padding agree to rtol 1e-5.
"""

from __future__ import annotations

import copy
from functools import partial
from unittest import mock

import jax
import numpy as np
import pytest
import torch

from harness import spec
from harness.discovery import load_workload
from harness.prepare_data import DEFAULT_DATA_DIR
from workloads.nci_molecules.jax import padded_size
import parity
from torch_to_flax import convert_layers, indexed_path

SEED = 3
MLP_LAYERS = {"0": "dense", "1": "ln"}  # torch's mlp() Sequential indices -> the Flax Mlp's names


def flax_path(torch_name: str) -> str:
    """`steps.0.edge_mlp.1` -> `steps_0/edge_mlp/ln`, `atom_embedding.table` -> `atom_embedding/table`."""
    *module, last = torch_name.split(".")
    if module and module[-1].endswith("_mlp"):
        return f"{indexed_path('.'.join(module))}/{MLP_LAYERS[last]}"
    return indexed_path(torch_name)


def convert(model: torch.nn.Module) -> dict:
    return convert_layers(model, flax_path)


def leaf_at(tree: dict, path: str):
    for name in path.split("/"):
        tree = tree[name]
    return tree


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture(scope="module")
def pair():
    torch_workload = load_workload("nci_molecules", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("nci_molecules", "jax", DEFAULT_DATA_DIR)
    model, _ = torch_workload.init_model_fn(SEED)
    jax_params, jax_state = jax_workload.init_model_fn(SEED)
    params = convert(model)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
    assert jax_state == {}
    index = np.arange(40, 72)  # 32 graphs
    return torch_workload, model, jax_workload, jax_params, jax.device_put(params), index


def test_parameter_types_match_torch(pair):
    torch_workload, model, jax_workload, *_ = pair
    layers = dict(model.named_modules())
    weight = {torch.nn.Linear: "kernel", torch.nn.LayerNorm: "scale", torch.nn.Embedding: "embedding"}
    for torch_name, kind in torch_workload.model_params_types.items():
        module, leaf = torch_name.rsplit(".", 1)
        flax_leaf = weight[type(layers[module])] if leaf == "weight" else leaf
        assert leaf_at(jax_workload.model_params_types, f"{flax_path(module)}/{flax_leaf}") == kind, torch_name


@pytest.mark.parametrize("path, torch_name", [
    ("atom_embedding/table/embedding", "atom_embedding.table.weight"),  # Xavier-uniform
    ("bond_embedding/table/embedding", "bond_embedding.table.weight"),
    ("steps_0/edge_mlp/dense/kernel", "steps.0.edge_mlp.0.weight"),  # truncated-normal LeCun
    ("steps_2/global_mlp/dense/kernel", "steps.2.global_mlp.0.weight"),
    ("head/kernel", "head.weight"),
])
def test_jax_initialisation_draws_from_torchs_distributions(pair, path, torch_name):
    _, model, _, jax_params, _, _ = pair
    jax_value = np.asarray(leaf_at(jax_params, path))
    torch_value = dict(model.named_parameters())[torch_name].detach().numpy()
    assert abs(jax_value.mean()) < 0.1 * torch_value.std()
    assert jax_value.std() == pytest.approx(torch_value.std(), rel=0.1)
    assert np.abs(jax_value).max() <= np.abs(torch_value).max() * 1.05  # both bounded: uniform, or normal cut at 2σ


def test_jax_initial_biases_are_zero_and_layer_norms_identity(pair):
    _, _, _, jax_params, _, _ = pair
    for path, leaf in jax.tree_util.tree_leaves_with_path(jax_params):
        names = [entry.key for entry in path]
        if names[-1] == "bias":
            assert not np.asarray(leaf).any(), names
        if names[-1] == "scale":
            assert (np.asarray(leaf) == 1).all(), names


def test_padding_is_bounded():
    sizes = [padded_size(n) for n in range(1, 1 << 14)]
    assert all(n <= size < 1.25 * n + 1 for n, size in enumerate(sizes, 1))
    assert all(len({s for s in sizes if 1 << k <= s < 2 << k}) == 4 for k in range(3, 13))  # four per doubling


def test_a_padded_batch_holds_the_graphs_and_masks_the_padding(pair):
    torch_workload, _, jax_workload, _, _, index = pair
    batch, padded = torch_workload.host_batch("train", index), jax_workload.host_batch("train", index)
    graphs, padded_graphs = batch["inputs"], padded["inputs"]
    n_nodes, n_edges, n_graphs = len(graphs.nodes), len(graphs.edges), graphs.num_graphs
    assert len(padded_graphs.nodes) == max(padded_size(n_nodes + 1), padded_size(-(-n_edges // 2))) > n_nodes
    assert len(padded_graphs.edges) == 2 * len(padded_graphs.nodes) >= n_edges
    assert len(padded["targets"]) == padded_size(n_graphs + 1) > n_graphs
    assert padded_graphs.num_graphs == n_graphs
    for name in ("nodes", "edges", "senders", "receivers", "node_graph", "edge_graph"):
        real = getattr(graphs, name)
        np.testing.assert_array_equal(getattr(padded_graphs, name)[: len(real)], real, err_msg=name)
    added = {"senders": (n_edges, n_nodes), "receivers": (n_edges, n_nodes), "node_graph": (n_nodes, n_graphs),
             "edge_graph": (n_edges, n_graphs)}  # name -> (real entries, value of the added ones)
    for name, (real, value) in added.items():
        assert (getattr(padded_graphs, name)[real:] == value).all(), name
    assert not padded_graphs.nodes[n_nodes:].any() and not padded_graphs.edges[n_edges:].any()
    np.testing.assert_array_equal(padded["targets"][:n_graphs], batch["targets"])
    assert (padded["weights"][:n_graphs] == 1).all() and not padded["weights"][n_graphs:].any()


def test_training_batches_take_two_shapes(pair):
    """Batches of 128 graphs hold 1,845 to 2,409 nodes: 2,048 or 2,560 after padding (jax.py)."""
    _, _, jax_workload, *_ = pair
    batches = jax_workload.train_batch_indices(0, "train", 128)
    shapes = set()
    for _ in range(2 * 31):  # two epochs of 31 batches
        batch = jax_workload.host_batch("train", next(batches))
        shapes.add((len(batch["targets"]), len(batch["inputs"].nodes), len(batch["inputs"].edges)))
    assert shapes == {(160, 2048, 4096), (160, 2560, 5120)}


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_batch_give_the_same_logits_and_loss(pair, mode):
    torch_workload, model, jax_workload, _, params, index = pair
    torch_batch = torch_workload.to_device(torch_workload.host_batch("train", index))
    logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, update_batch_norm=False, dropout_rate=0.0)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits, label_smoothing=0.1)
    n = len(index)
    for batch in (torch_workload.host_batch("train", index), jax_workload.host_batch("train", index)):  # as is, padded
        jax_batch = jax_workload.to_device(batch)
        jax_logits, _ = jax_workload.model_fn(params, jax_batch, {}, mode, 0, update_batch_norm=False,
                                              dropout_rate=0.0)
        jax_loss = jax_workload.loss_fn(jax_batch["targets"], jax_logits, jax_batch.get("weights"),
                                        label_smoothing=0.1)
        assert jax_logits.shape == (len(batch["targets"]), 41)
        np.testing.assert_allclose(np.asarray(jax_logits)[:n], logits.detach().numpy(), rtol=1e-5, atol=1e-5)
        assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
        assert float(jax_loss["n_valid_examples"]) == float(loss["n_valid_examples"]) == n * 41


def test_training_mode_drops_out_at_the_default_rate(pair):
    _, _, jax_workload, _, params, index = pair
    batch = jax_workload.to_device(jax_workload.host_batch("train", index))

    def logits(mode, rng, **kwargs):
        return np.asarray(jax_workload.model_fn(params, batch, {}, mode, rng, update_batch_norm=True, **kwargs)[0])

    train, evaluation = spec.ForwardPassMode.TRAIN, spec.ForwardPassMode.EVAL
    np.testing.assert_array_equal(logits(train, 1), logits(train, 1))
    assert not np.allclose(logits(train, 1), logits(train, 2), atol=1e-3)
    assert not np.allclose(logits(train, 1), logits(evaluation, 1), atol=1e-3)
    np.testing.assert_array_equal(logits(train, 1, dropout_rate=0.0), logits(evaluation, 1))


def test_padding_changes_neither_loss_nor_gradient(pair):
    torch_workload, _, jax_workload, _, params, index = pair

    def loss_and_grad(batch):
        batch = jax_workload.to_device(batch)

        def mean_loss(p):
            logits, _ = jax_workload.model_fn(p, batch, {}, spec.ForwardPassMode.TRAIN, 0, True, dropout_rate=0.0)
            loss = jax_workload.loss_fn(batch["targets"], logits, batch.get("weights"))
            return loss["summed"] / loss["n_valid_examples"]

        return jax.value_and_grad(mean_loss)(params)

    loss, grad = loss_and_grad(torch_workload.host_batch("train", index))
    padded_loss, padded_grad = loss_and_grad(jax_workload.host_batch("train", index))
    assert float(padded_loss) == pytest.approx(float(loss), rel=1e-6)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(padded_grad), jax.tree_util.tree_leaves(grad)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=jax.tree_util.keystr(path))


def test_one_adamw_step_gives_the_same_parameters(pair):
    """Dropout off in both frameworks: Adam's step compares gradients, not dropout masks."""
    torch_workload, model, jax_workload, _, params, index = pair
    batch = torch_workload.host_batch("train", index)
    with mock.patch.object(jax_workload, "model_fn", partial(jax_workload.model_fn, dropout_rate=0.0)):
        moved, expected = parity.adamw_moves(torch_workload, without_dropout(model), jax_workload, params, {}, batch,
                                             convert)
    parity.assert_moves_agree(moved, expected)
    assert np.abs(leaf_at(moved, "head/kernel")).max() > 0.5 * parity.LR


def test_evaluation_gives_the_same_metrics(pair):
    """The whole validation split in batches of 256 and 243 graphs, padded to two shapes in JAX."""
    torch_workload, model, jax_workload, _, params, _ = pair
    n = torch_workload.num_validation_examples
    metrics = torch_workload._eval_model_on_split("validation", n, 256, model, None, 0, DEFAULT_DATA_DIR)
    jax_metrics = jax_workload._eval_model_on_split("validation", n, 256, params, {}, 0, DEFAULT_DATA_DIR)
    assert jax_metrics.keys() == metrics.keys() == {"loss", "accuracy", "mean_average_precision"}
    assert jax_metrics["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
    assert jax_metrics["accuracy"] == pytest.approx(metrics["accuracy"], abs=1.5 / (n * 41))  # a logit at 0 may flip
    assert jax_metrics["mean_average_precision"] == pytest.approx(metrics["mean_average_precision"], abs=1e-4)

"""wmt in JAX against PyTorch, on the test model (TIMETRIAL_WMT_TEST_MODEL) over the tiny preparation
of tests/wmt_source.py: the same weights (torch's, converted) and the same packed training rows give the
same logits and label-smoothed loss in evaluation and training mode; the parameter types are torch's;
JAX's initialisation draws from torch's distributions; dropout acts in training only; one AdamW step
moves the parameters the same; cached one-step decoding gives torch's logits; beam search gives the
same translations, and an evaluation the same loss, accuracy and BLEU.

Weights: torch's initial ones plus N(0, 0.05²) noise, so that every parameter (LayerNorms, 1e-6 biases)
shapes the output. Logits of size ~1 then differ by up to ~1e-6 between the frameworks (float32 sums in
another order, XLA against torch's CPU kernels): rtol and atol 1e-5, losses rel 1e-5. An untrained model
translates every sentence into one repeated piece, so translation uses N(0, 0.5²) noise with decoder_ln's
bias pushed towards EOS's embedding: translations of varied pieces ending at varied steps, some running to
256 tokens. Beam search compares sums of log-probabilities, where rounding differences of ~1e-5 change
nothing unless two candidates are that close; the translations must be identical token for token.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from functools import partial

import jax
import numpy as np
import pytest
import scipy.stats
import torch

import parity
from harness import spec
from harness.discovery import load_workload
from torch_to_flax import convert_layers, indexed_path
from wmt_source import prepare_tiny, write_source
from workloads.wmt import jax as wmt_jax
from workloads.wmt import torch as wmt_torch
from workloads.wmt.data import EOS_ID, PAD_ID
from workloads.wmt.workload import ALGOPERF_CONFIG, MAX_DECODE_LENGTH, TEST_MODEL_VARIABLE

SEED = 3
NOISE, TRANSLATING_NOISE, EOS_PUSH = 0.05, 0.5, 2.5
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
EVAL_EXAMPLES, EVAL_BATCH = 20, 8  # 3 batches, the last with 4 empty rows


class JaxWorkloadWithoutDefaultDropout(wmt_jax.WmtJaxWorkload):
    """model_fn's dropout_rate None means 0 here (as for the torch model whose Dropout modules are set to
    0), for parity.adamw_moves, which leaves the rate at its default."""

    def build_model(self):
        return wmt_jax.Transformer(replace(self.model_config, dropout_rate=0.0))


def leaf_at(tree: dict, path: str):
    for name in path.split("/"):
        tree = tree[name]
    return tree


def perturb(model: torch.nn.Module, noise: float) -> torch.nn.Module:
    """A copy of `model` with N(0, noise²) added to every parameter (seeded) and dropout off by default."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape, generator=generator))
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(torch workload, its initial model, the perturbed model, JAX workload, JAX's own initial params,
    the perturbed model's weights as Flax params, the data_dir)."""
    root = tmp_path_factory.mktemp("wmt")
    write_source(root / "source")
    data_dir = root / "data"
    prepare_tiny(data_dir, root / "source")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv(TEST_MODEL_VARIABLE, "1")
        torch_workload = load_workload("wmt", "pytorch", data_dir)
        jax_workload = JaxWorkloadWithoutDefaultDropout(data_dir)
        model, _ = torch_workload.init_model_fn(SEED)
        jax_params, jax_state = jax_workload.init_model_fn(SEED)
        assert jax_state == {}
        perturbed = perturb(model, NOISE)
        params = convert_layers(perturbed)
        assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
        assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
        yield torch_workload, model, perturbed, jax_workload, jax_params, jax.device_put(params), data_dir


@pytest.fixture(scope="module")
def translating(pair):
    """(torch model, its Flax params) that translate into varied pieces and end translations at varied steps."""
    torch_workload, model, _, jax_workload, _, _, data_dir = pair
    translating = perturb(model, TRANSLATING_NOISE)
    with torch.no_grad():
        eos = translating.shared_embedding.weight[EOS_ID]
        translating.decoder_ln.bias.add_(EOS_PUSH * eos / eos.norm())
    return translating.eval(), jax.device_put(convert_layers(translating))


def training_rows(workload, count: int = 4) -> dict[str, np.ndarray]:
    """The first `count` packed training rows, several pairs each."""
    batch = workload.host_batch("train", np.arange(count))
    assert batch["targets_segmentation"].max() >= 3
    return batch


def test_parameter_types_match_torch(pair):
    torch_workload, model, _, jax_workload, *_ = pair
    layers = dict(model.named_modules())
    weight = {torch.nn.Linear: "kernel", torch.nn.LayerNorm: "scale", torch.nn.Embedding: "embedding"}
    for torch_name, kind in torch_workload.model_params_types.items():
        module, leaf = torch_name.rsplit(".", 1)
        flax_leaf = weight[type(layers[module])] if leaf == "weight" else leaf
        assert leaf_at(jax_workload.model_params_types, f"{indexed_path(module)}/{flax_leaf}") == kind, torch_name
    assert jax_workload.is_output_params("shared_embedding/embedding")


@pytest.mark.parametrize("suffix", ["shared_embedding.weight", ".qkv.weight", ".q.weight", ".kv.weight",
                                    ".out.weight", ".mlp.0.weight", ".mlp.3.weight"])
def test_jax_initialisation_draws_from_torchs_distributions(pair, suffix):
    """The values of every parameter of a kind, pooled, pass a two-sample Kolmogorov-Smirnov test
    against torch's (p > 1e-3): same scale and same shape (a normal is not a uniform of equal variance)."""
    _, model, _, _, jax_params, _, _ = pair
    torch_values, jax_values = [], []
    for name, value in model.named_parameters():
        if name.endswith(suffix):
            module, _ = name.rsplit(".", 1)
            flax_leaf = "embedding" if module == "shared_embedding" else "kernel"
            torch_values.append(value.detach().numpy().ravel())
            jax_values.append(np.asarray(leaf_at(jax_params, f"{indexed_path(module)}/{flax_leaf}")).ravel())
    torch_values, jax_values = np.concatenate(torch_values), np.concatenate(jax_values)
    assert len(jax_values) == len(torch_values) >= 1024
    assert scipy.stats.ks_2samp(jax_values, torch_values).pvalue > 1e-3


def test_jax_biases_and_layer_norms_start_as_torchs(pair):
    """MLP biases N(0, 1e-6²) (too few values for a KS test: their scale), LayerNorms 1 and 0 exactly."""
    _, model, _, _, jax_params, _, _ = pair
    for name, layer in model.named_modules():
        path = indexed_path(name)
        if isinstance(layer, torch.nn.LayerNorm):
            for leaf, value in (("scale", layer.weight), ("bias", layer.bias)):
                np.testing.assert_array_equal(leaf_at(jax_params, f"{path}/{leaf}"), value.detach().numpy())
        elif isinstance(layer, torch.nn.Linear) and layer.bias is not None:
            for values in (layer.bias.detach().numpy(), np.asarray(leaf_at(jax_params, f"{path}/bias"))):
                assert 0.3e-6 < values.std() < 2e-6 and np.abs(values).max() < 6e-6, name


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_packed_rows_give_the_same_logits_and_loss(pair, mode):
    torch_workload, _, model, jax_workload, _, params, _ = pair
    batch = training_rows(torch_workload)
    torch_batch, jax_batch = torch_workload.to_device(batch), jax_workload.to_device(batch)
    logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, update_batch_norm=False, dropout_rate=0.0)
    loss = torch_workload.loss_fn(torch_batch["targets"], logits, torch_batch["weights"], label_smoothing=0.1)
    jax_logits, _ = jax_workload.model_fn(params, jax_batch, {}, mode, 0, update_batch_norm=False, dropout_rate=0.0)
    jax_loss = jax_workload.loss_fn(jax_batch["targets"], jax_logits, jax_batch["weights"], label_smoothing=0.1)
    assert logits.detach().std() > 0.5  # logits that the weights shape
    np.testing.assert_allclose(np.asarray(jax_logits), logits.detach().numpy(), **TOLERANCE)
    assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
    assert float(jax_loss["n_valid_examples"]) == float(loss["n_valid_examples"]) == float(batch["weights"].sum())


def test_dropout_acts_in_training_only_where_torchs_does(pair, monkeypatch):
    torch_workload, _, model, jax_workload, _, params, data_dir = pair
    batch = jax_workload.to_device(training_rows(jax_workload))

    def logits(workload, mode, rate):
        return np.asarray(workload.model_fn(params, batch, {}, mode, 1, False, dropout_rate=rate)[0])

    evaluation = logits(jax_workload, spec.ForwardPassMode.EVAL, 0.0)
    np.testing.assert_array_equal(logits(jax_workload, spec.ForwardPassMode.EVAL, 0.1), evaluation)
    np.testing.assert_array_equal(logits(jax_workload, spec.ForwardPassMode.TRAIN, 0.0), evaluation)
    assert np.abs(logits(jax_workload, spec.ForwardPassMode.TRAIN, 0.1) - evaluation).mean() > 0.01
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv(TEST_MODEL_VARIABLE, "1")
        workload = load_workload("wmt", "jax", data_dir)  # the real one: AlgoPerf's rate 0.1 by default
        assert workload.model.config.dropout_rate == 0.1
        default = logits(workload, spec.ForwardPassMode.TRAIN, None)
    assert np.abs(default - evaluation).mean() > 0.01
    np.testing.assert_array_equal(default, logits(jax_workload, spec.ForwardPassMode.TRAIN, 0.1))

    # The same places: the shapes of what each framework drops, call by call.
    dropped, torch_dropped = [], []
    real_dropout = wmt_jax.dropout

    def recorded(module, x, rate, train):
        if train and rate > 0:
            dropped.append(tuple(x.shape))
        return real_dropout(module, x, rate, train)

    monkeypatch.setattr(wmt_jax, "dropout", recorded)
    logits(jax_workload, spec.ForwardPassMode.TRAIN, 0.1)
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda module, args, out: torch_dropped.append(tuple(out.shape)))
    torch_workload.model_fn(model, torch_workload.to_device(training_rows(torch_workload)), None,
                            spec.ForwardPassMode.TRAIN, 0, update_batch_norm=False, dropout_rate=0.1)
    assert len(dropped) == 9 and sorted(dropped) == sorted(torch_dropped)


def test_one_adamw_step_gives_the_same_parameters(pair):
    torch_workload, _, model, jax_workload, _, params, _ = pair
    moved, expected = parity.adamw_moves(torch_workload, model, jax_workload, params, {}, training_rows(torch_workload),
                                         convert_layers)
    parity.assert_moves_agree(moved, expected)
    assert np.abs(leaf_at(moved, "shared_embedding/embedding")).max() > 0.5 * parity.LR


def test_cached_decoding_gives_torchs_logits_and_the_full_forward_pass(pair):
    """Teacher-forced one position at a time, 2 sources with 3 target rows each (as beams)."""
    torch_workload, _, model, jax_workload, _, params, _ = pair
    validation = torch_workload.host_batch("validation", np.arange(2))
    sources, targets = validation["inputs"], np.repeat(validation["targets"], 3, axis=0)[:, :12]
    targets[1::3, 4:] = targets[0::3, 3:11]  # rows of one source that differ
    decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
    with torch.no_grad():
        torch_sources = torch.from_numpy(sources.astype(np.int64))
        memory_kv, mask = model.start_decoding(torch_sources)
        caches, torch_steps = model.empty_caches(len(targets), targets.shape[1]), []
        for index in range(targets.shape[1]):
            logits, caches = model.decode_step(torch.from_numpy(decoder_inputs[:, index].astype(np.int64)), index,
                                               memory_kv, mask, caches)
            torch_steps.append(logits.numpy())
    variables, transformer = {"params": params}, jax_workload.model
    memory_kv, mask = transformer.apply(variables, sources, method=wmt_jax.Transformer.start_decoding)
    step = jax.jit(lambda tokens, index, caches: transformer.apply(
        variables, tokens, index, memory_kv, mask, caches, method=wmt_jax.Transformer.decode_step))
    caches, jax_steps = wmt_jax.empty_caches(transformer.config, len(targets), targets.shape[1]), []
    for index in range(targets.shape[1]):
        logits, caches = step(decoder_inputs[:, index], index, caches)
        jax_steps.append(np.asarray(logits))
    jax_steps, torch_steps = np.stack(jax_steps, axis=1), np.stack(torch_steps, axis=1)
    np.testing.assert_allclose(jax_steps, torch_steps, **TOLERANCE)
    full = transformer.apply(variables, {"inputs": np.repeat(sources, 3, axis=0), "targets": targets}, train=False)
    np.testing.assert_allclose(jax_steps, np.asarray(full), **TOLERANCE)
    assert np.abs(jax_steps[0, 5:] - jax_steps[1, 5:]).max() > 0.1


def test_beam_search_gives_the_same_translations(pair, translating):
    torch_workload, _, _, jax_workload, _, _, _ = pair
    model, params = translating
    inputs = torch_workload.host_batch("validation", np.arange(EVAL_EXAMPLES))["inputs"]
    tokens = wmt_torch.translate(model, torch.from_numpy(inputs.astype(np.int64))).numpy()
    jax_tokens = np.asarray(wmt_jax.translate(jax_workload.model, params, inputs))
    assert tokens.shape == jax_tokens.shape == (EVAL_EXAMPLES, MAX_DECODE_LENGTH)
    ends = [row.index(EOS_ID) if EOS_ID in row else None for row in tokens.tolist()]
    assert 2 <= ends.count(None) <= EVAL_EXAMPLES - 5 and len({end for end in ends if end is not None}) >= 4
    assert len(np.unique(tokens)) > 20  # varied pieces, not one repeated
    np.testing.assert_array_equal(jax_tokens, tokens)


def test_evaluation_gives_the_same_sums_and_metrics(pair, translating):
    """Each evaluation batch's teacher-forced sums and BLEU statistics of its translations (the untrained
    model's BLEU is 0: its n-gram counts and lengths are what can differ), then the metrics."""
    torch_workload, _, _, jax_workload, _, _, _ = pair
    model, params = translating
    totals = {}
    with torch_workload.evaluation_mode():
        batches = zip(torch_workload.cached_eval_batches("validation", EVAL_EXAMPLES, EVAL_BATCH),
                      jax_workload.cached_eval_batches("validation", EVAL_EXAMPLES, EVAL_BATCH))
        for torch_batch, jax_batch in batches:
            sums = torch_workload.to_host(torch_workload.eval_batch_sums("validation", model, None, 0, torch_batch))
            jax_sums = jax_workload.to_host(jax_workload.eval_batch_sums("validation", params, {}, 0, jax_batch))
            assert jax_sums.keys() == sums.keys()
            for key in sums:
                assert float(jax_sums[key]) == pytest.approx(float(sums[key]), rel=1e-5), key
                totals[key] = totals.get(key, 0.0) + float(sums[key])
    targets = torch_workload.host_split("validation")["targets"][:EVAL_EXAMPLES]
    assert totals["tokens"] == (np.asarray(targets) != PAD_ID).sum()  # the empty rows count nothing
    assert totals["bleu_sys_len"] > 0 and totals["bleu_ref_len"] > 0 and totals["correct"] > 0
    metrics = torch_workload.metrics_from_sums(totals)
    assert set(metrics) == {"loss", "accuracy", "bleu"} and metrics["bleu"] == 0.0


def test_the_jax_model_at_algoperf_size_has_algoperfs_parameter_count():
    """Shapes only (`jax.eval_shape`: nothing allocated); the count is test_wmt_model.py's, from AlgoPerf's
    definition, and the layout torch's."""
    tokens = jax.ShapeDtypeStruct((2, ALGOPERF_CONFIG.max_length), np.int32)
    shapes = jax.eval_shape(partial(wmt_jax.Transformer(ALGOPERF_CONFIG).init, train=False), jax.random.PRNGKey(0),
                            {"inputs": tokens, "targets": tokens})["params"]
    assert sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)) == 133_521_408
    assert len(shapes) == 6 + 6 + 3  # blocks, final LayerNorms, shared embedding
    assert shapes["encoder_5"]["attention"]["qkv"]["kernel"].shape == (1024, 3 * 1024)
    assert shapes["decoder_0"]["cross_attention"]["kv"]["kernel"].shape == (1024, 2 * 1024)
    assert shapes["shared_embedding"]["embedding"].shape == (32_000, 1024)

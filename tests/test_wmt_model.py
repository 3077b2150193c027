"""The wmt Transformer in PyTorch (workloads/wmt/torch.py): AlgoPerf's parameter count, shapes, types and
initial distributions at AlgoPerf's size (the model built once, no forward pass); on a tiny
configuration, packed rows against their pairs run alone, padding, causality, dropout by mode, the
label-smoothed loss against a hand computation, and cached one-step decoding against the teacher-forced
forward pass.

Tolerances: logits of size ~1 computed with other shapes (a packed row of 40 against a pair of 9; a
padded batch; one position at a time) sum in another order in float32: rtol and atol 1e-5, where a
wrong mask, position or shift moves them by ~0.1 or more.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import spec
from harness.discovery import load_workload
from wmt_source import TINY_VOCABULARY, prepare_tiny, write_source
from workloads.wmt.data import EOS_ID, PAD_ID
from workloads.wmt.torch import Transformer, WmtTorchWorkload, shift_right
from workloads.wmt.workload import ALGOPERF_CONFIG, TEST_CONFIG, TEST_MODEL_VARIABLE

VOCABULARY = 300
TINY = replace(TEST_CONFIG, vocab_size=VOCABULARY)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
PACKED_KEYS = ("inputs", "targets", "inputs_position", "targets_position", "inputs_segmentation",
               "targets_segmentation")


class AlgoPerfSizedWorkload(WmtTorchWorkload):
    model_config = ALGOPERF_CONFIG  # instead of the prepared data's


class TinyWorkload(WmtTorchWorkload):
    model_config = TINY


def tiny_model(seed: int = 0, dropout_rate: float = 0.0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(replace(TINY, dropout_rate=dropout_rate)).eval()


def sentence(rng: np.random.Generator, length: int) -> list[int]:
    """`length` - 1 random pieces (ids 3 and up: not padding, not EOS) and EOS."""
    return rng.integers(3, VOCABULARY, length - 1).tolist() + [EOS_ID]


def unpacked(pairs: list[tuple[list[int], list[int]]], length: int) -> dict[str, torch.Tensor]:
    """Pairs one to a row, zero-padded to `length`."""
    rows = {key: torch.zeros(len(pairs), length, dtype=torch.long) for key in ("inputs", "targets")}
    for row, (source, target) in enumerate(pairs):
        rows["inputs"][row, : len(source)] = torch.tensor(source)
        rows["targets"][row, : len(target)] = torch.tensor(target)
    return rows


def packed(rows: list[list[tuple[list[int], list[int]]]], length: int) -> dict[str, torch.Tensor]:
    """Each row's pairs one after another, with AlgoPerf's position (0-based, per pair) and
    segmentation (1, 2, ... per pair, 0 on padding) keys."""
    batch = {key: torch.zeros(len(rows), length, dtype=torch.long) for key in PACKED_KEYS}
    for row, pairs in enumerate(rows):
        for side, index in (("inputs", 0), ("targets", 1)):
            start = 0
            for segment, pair in enumerate(pairs, 1):
                tokens = torch.tensor(pair[index])
                span = slice(start, start + len(tokens))
                batch[side][row, span] = tokens
                batch[f"{side}_position"][row, span] = torch.arange(len(tokens))
                batch[f"{side}_segmentation"][row, span] = segment
                start += len(tokens)
    return batch


def teacher_forced_steps(model: Transformer, source: torch.Tensor, decoder_inputs: torch.Tensor) -> torch.Tensor:
    """Logits (N, T, vocabulary) of cached one-step decoding fed `decoder_inputs` (N, T); N a multiple of
    the sources' rows (each source's rows side by side)."""
    memory_kv, mask = model.start_decoding(source)
    caches = model.empty_caches(len(decoder_inputs), decoder_inputs.shape[1])
    steps = []
    for index in range(decoder_inputs.shape[1]):
        logits, caches = model.decode_step(decoder_inputs[:, index], index, memory_kv, mask, caches)
        steps.append(logits)
    return torch.stack(steps, dim=1)


def test_parameter_count_shapes_types_and_initialisation_at_algoperf_size():
    # AlgoPerf's wmt model (wmt_jax/models.py TransformerConfig, wmt_pytorch/models.py Transformer):
    V, W, MLP, ENCODER_LAYERS, DECODER_LAYERS = 32_000, 1024, 1024, 6, 6
    layer_norm = 2 * W  # scale and bias
    attention = 4 * W * W  # query, key, value and output projections, no biases
    mlp = W * MLP + MLP + MLP * W + W  # two Dense layers with biases
    encoder_layer = 2 * layer_norm + attention + mlp
    decoder_layer = 3 * layer_norm + 2 * attention + mlp  # self-attention and encoder-decoder attention
    expected = V * W + ENCODER_LAYERS * encoder_layer + DECODER_LAYERS * decoder_layer + 2 * layer_norm
    assert (encoder_layer, decoder_layer, expected) == (6_297_600, 10_493_952, 133_521_408)

    workload = AlgoPerfSizedWorkload("unused-data-dir")
    model, model_state = workload.init_model_fn(0)
    assert model_state is None
    shapes, types = workload.param_shapes, workload.model_params_types
    assert sum(math.prod(shape.shape_tuple) for shape in shapes.values()) == expected
    assert sum(p.numel() for p in model.parameters()) == expected and set(types) == set(shapes)
    T = spec.ParameterType
    assert shapes["shared_embedding.weight"].shape_tuple == (V, W) and types["shared_embedding.weight"] == T.EMBEDDING
    assert workload.is_output_params("shared_embedding.weight") and not workload.is_output_params("encoder_ln.weight")
    expected_types = {
        "encoder.5.attention.qkv.weight": ((3 * W, W), T.ATTENTION_QKV),
        "encoder.0.attention.out.weight": ((W, W), T.ATTENTION_OUT),
        "decoder.0.self_attention.qkv.weight": ((3 * W, W), T.ATTENTION_QKV),
        "decoder.3.cross_attention.q.weight": ((W, W), T.ATTENTION_Q),
        "decoder.3.cross_attention.kv.weight": ((2 * W, W), T.ATTENTION_KV),
        "decoder.5.cross_attention.out.weight": ((W, W), T.ATTENTION_OUT),
        "decoder.2.mlp.0.weight": ((MLP, W), T.WEIGHT), "decoder.2.mlp.0.bias": ((MLP,), T.BIAS),
        "encoder.1.mlp.3.weight": ((W, MLP), T.WEIGHT), "encoder.1.mlp.3.bias": ((W,), T.BIAS),
        "decoder.4.ln3.weight": ((W,), T.LAYER_NORM_SCALE), "encoder_ln.bias": ((W,), T.LAYER_NORM_BIAS),
        "decoder_ln.weight": ((W,), T.LAYER_NORM_SCALE),
    }
    for name, (shape, kind) in expected_types.items():
        assert (shapes[name].shape_tuple, types[name]) == (shape, kind), name
    assert not any("bias" in name for name in types if "attention" in name)

    # Initial distributions: embedding N(0, 1); each width x width projection U(±√(3 / W)) (Xavier),
    # MLP kernels U(±√(6 / (W + MLP))); biases N(0, 1e-6²); LayerNorms 1 and 0.
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        embedding = parameters["shared_embedding.weight"]
        assert abs(embedding.mean()) < 1e-3 and abs(embedding.std() - 1) < 1e-3
        for name, bound in (("decoder.0.self_attention.qkv.weight", math.sqrt(3 / W)),
                            ("decoder.0.cross_attention.kv.weight", math.sqrt(3 / W)),
                            ("encoder.0.attention.out.weight", math.sqrt(3 / W)),
                            ("encoder.0.mlp.0.weight", math.sqrt(6 / (W + MLP)))):
            kernel = parameters[name]
            assert kernel.abs().max() <= bound and kernel.abs().max() > 0.999 * bound, name
            assert abs(kernel.std() - bound / math.sqrt(3)) < 0.01 * bound, name  # a uniform's deviation
        bias = parameters["encoder.0.mlp.0.bias"]
        assert 0.8e-6 < bias.std() < 1.2e-6
        assert torch.equal(parameters["decoder_ln.weight"], torch.ones(W))
        assert torch.equal(parameters["decoder_ln.bias"], torch.zeros(W))


def test_a_packed_row_gives_its_pairs_logits_as_when_run_alone():
    """Segment masks keep pairs apart, positions restart at each pair, and the decoder's input is the
    whole row shifted right (AlgoPerf's shift_right): a pair after the first starts from the previous
    pair's EOS, which decoding it alone from that start token reproduces."""
    model = tiny_model()
    rng = np.random.default_rng(0)
    rows = [[(sentence(rng, 9), sentence(rng, 7)), (sentence(rng, 5), sentence(rng, 11)),
             (sentence(rng, 12), sentence(rng, 6))],
            [(sentence(rng, 14), sentence(rng, 13)), (sentence(rng, 8), sentence(rng, 9))]]
    batch = packed(rows, 40)
    with torch.no_grad():
        logits = model(batch)
        for row, pairs in enumerate(rows):
            start = 0
            for segment, (source, target) in enumerate(pairs, 1):
                alone = unpacked([(source, target)], max(len(source), len(target)))
                decoder_inputs = shift_right(alone["targets"])[:, : len(target)]
                if segment > 1:
                    decoder_inputs[0, 0] = EOS_ID  # the previous pair's last token
                expected = teacher_forced_steps(model, alone["inputs"], decoder_inputs)[0]
                got = logits[row, start : start + len(target)]
                torch.testing.assert_close(got, expected, **TOLERANCE)
                if segment == 1:
                    torch.testing.assert_close(got, model(alone)[0, : len(target)], **TOLERANCE)
                else:  # a start token of 0 would give other logits
                    assert (got[0] - model(alone)[0, 0]).abs().max() > 0.1
                start += len(target)
    np.testing.assert_array_equal(shift_right(batch["targets"])[:, 1:], batch["targets"][:, :-1])


def test_padding_changes_no_logit_of_a_real_token():
    model = tiny_model()
    rng = np.random.default_rng(1)
    pairs = [(sentence(rng, 9), sentence(rng, 7)), (sentence(rng, 4), sentence(rng, 10))]
    with torch.no_grad():
        short = model(unpacked(pairs, 10))
        long = model({key: torch.nn.functional.pad(value, (0, 15)) for key, value in unpacked(pairs, 10).items()})
    for row, (_, target) in enumerate(pairs):
        torch.testing.assert_close(long[row, : len(target)], short[row, : len(target)], **TOLERANCE)


def test_a_later_target_token_changes_no_earlier_logit():
    model = tiny_model()
    rng = np.random.default_rng(2)
    batch = unpacked([(sentence(rng, 8), sentence(rng, 10))], 10)
    changed = {key: value.clone() for key, value in batch.items()}
    changed["targets"][0, 5] = (batch["targets"][0, 5] + 1) % (VOCABULARY - 3) + 3
    with torch.no_grad():
        before, after = model(batch)[0], model(changed)[0]
    # The decoder reads target t at position t + 1: positions 0..5 see the same inputs.
    torch.testing.assert_close(after[:6], before[:6], **TOLERANCE)
    assert (after[6] - before[6]).abs().max() > 0.1


def test_dropout_acts_in_training_mode_only():
    workload = TinyWorkload("unused-data-dir")
    model, _ = workload.init_model_fn(0)
    rng = np.random.default_rng(3)
    batch = unpacked([(sentence(rng, 8), sentence(rng, 10)), (sentence(rng, 6), sentence(rng, 5))], 10)

    def logits(mode, rate=None):
        return workload.model_fn(model, batch, None, mode, 0, update_batch_norm=False, dropout_rate=rate)[0].detach()

    evaluation = logits(spec.ForwardPassMode.EVAL)
    torch.testing.assert_close(logits(spec.ForwardPassMode.EVAL, 0.3), evaluation, rtol=0, atol=0)
    torch.testing.assert_close(logits(spec.ForwardPassMode.TRAIN, 0.0), evaluation, rtol=0, atol=0)
    first, second = logits(spec.ForwardPassMode.TRAIN, 0.1), logits(spec.ForwardPassMode.TRAIN, 0.1)
    assert (first - evaluation).abs().mean() > 0.01 and (first - second).abs().mean() > 0.01
    assert all(m.p == 0.1 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert TINY.dropout_rate == ALGOPERF_CONFIG.dropout_rate == 0.1  # AlgoPerf's DROPOUT_RATE, the default

    # AlgoPerf's JAX places: embeddings + positions on each side; in an encoder block the attention
    # output, MLP hidden units and MLP output; in a decoder block both attention outputs and the MLP's two.
    dropped = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda module, args, out: dropped.append(tuple(out.shape)))
    logits(spec.ForwardPassMode.TRAIN, 0.1)
    width, hidden = TINY.width, TINY.mlp_width
    assert sorted(dropped) == sorted([(2, 10, width)] * (2 + 2 * TINY.encoder_layers + 3 * TINY.decoder_layers)
                                     + [(2, 10, hidden)] * (TINY.encoder_layers + TINY.decoder_layers))


def test_loss_is_label_smoothed_cross_entropy_summed_over_weighted_tokens():
    workload = TinyWorkload("unused-data-dir")
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 5, VOCABULARY)).astype(np.float32) * 3
    targets = rng.integers(1, VOCABULARY, (2, 5))
    weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    smoothing = 0.1
    # AlgoPerf: targets smoothed to (1 - s) onehot + s / vocabulary, loss -Σ smoothed · log_softmax.
    log_probabilities = logits - logits.max(-1, keepdims=True)
    log_probabilities -= np.log(np.exp(log_probabilities).sum(-1, keepdims=True))
    smoothed = np.full(logits.shape, smoothing / VOCABULARY)
    np.put_along_axis(smoothed, targets[..., None], 1 - smoothing + smoothing / VOCABULARY, axis=-1)
    per_token = -(smoothed * log_probabilities).sum(-1) * weights
    batch = workload.to_device({"targets": targets.astype(np.int32), "weights": weights})
    assert batch["targets"].dtype == torch.int64  # as AlgoPerf's PyTorch input pipeline
    out = workload.loss_fn(batch["targets"], torch.from_numpy(logits), batch["weights"], label_smoothing=smoothing)
    assert float(out["summed"]) == pytest.approx(per_token.sum(), rel=1e-5)
    assert float(out["n_valid_examples"]) == 8
    np.testing.assert_allclose(out["per_example"].reshape(2, 5).numpy(), per_token, rtol=1e-5, atol=1e-6)


def test_cached_one_step_decoding_equals_the_teacher_forced_forward_pass():
    """Rows of one source side by side (beams) share its encoder output: 2 sources, 3 target rows each."""
    model = tiny_model(seed=5)
    rng = np.random.default_rng(5)
    sources = unpacked([(sentence(rng, 9), [EOS_ID]), (sentence(rng, 6), [EOS_ID])], 12)["inputs"]
    targets = torch.tensor([sentence(rng, 8) for _ in range(6)])
    with torch.no_grad():
        full = model({"inputs": sources.repeat_interleave(3, dim=0), "targets": targets})
        stepwise = teacher_forced_steps(model, sources, shift_right(targets))
    torch.testing.assert_close(stepwise, full, **TOLERANCE)
    assert (full[0] - full[3]).abs().max() > 0.1  # the two sources give different logits


@pytest.fixture(scope="module")
def prepared_data(tmp_path_factory) -> Path:
    """A data_dir with the tiny wmt preparation (tests/wmt_source.py: real sentences, 300 pieces)."""
    root = tmp_path_factory.mktemp("wmt")
    write_source(root / "source")
    prepare_tiny(root / "data", root / "source")
    return root / "data"


def test_a_training_step_and_an_evaluation_on_prepared_data(prepared_data, monkeypatch):
    """The test model (TIMETRIAL_WMT_TEST_MODEL) on real packed rows: a label-smoothed loss with finite
    gradients everywhere; then an evaluation of 3 pairs in a batch of 4 (one empty row), translated by
    beam search (beam 4, up to 256 tokens) into BLEU."""
    monkeypatch.setenv(TEST_MODEL_VARIABLE, "1")
    workload = load_workload("wmt", "pytorch", prepared_data)
    model, _ = workload.init_model_fn(0)
    assert workload.model_config.vocab_size == TINY_VOCABULARY and model.config.width == TEST_CONFIG.width
    batch = next(workload._build_input_queue(0, "train", str(prepared_data), 4))
    assert set(PACKED_KEYS) <= set(batch) and int(batch["targets_segmentation"].max()) >= 2
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, 0, update_batch_norm=True)
    loss = workload.loss_fn(batch["targets"], logits, batch["weights"], label_smoothing=0.1)
    assert float(loss["n_valid_examples"]) == float((batch["targets"] != PAD_ID).sum())
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().max() > 0 for p in model.parameters())

    metrics = workload._eval_model_on_split("validation", 3, 4, model, None, 0, str(prepared_data))
    assert set(metrics) == {"loss", "accuracy", "bleu"} and all(math.isfinite(v) for v in metrics.values())
    assert 0 <= metrics["bleu"] <= 100 and 0 <= metrics["accuracy"] <= 1

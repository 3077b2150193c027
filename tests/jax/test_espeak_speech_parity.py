"""espeak_speech in JAX against PyTorch: the same initial weights (torch's, converted) and the same batch
give the same logits, paddings and CTC loss, in evaluation and training mode, although JAX pads frames
and targets further (`static_shapes`); the CTC loss and its gradient match torch's `F.ctc_loss`
(repeated labels, an empty label, an infeasible alignment counted 0), and so do Hessian-vector
products through the loss and through the whole model (torch's go through `ctc_nll`); one AdamW step
gives the same parameters; evaluation gives the same CTC loss and word error rate; sampled labels
follow the CTC distribution; JAX's own initialisation draws from torch's distributions; parameter
types match torch's; a trial's batches take a bounded number of shapes.

Tolerances: float32 matrix products, convolutions, softmaxes and LayerNorms summed in another order
(XLA against torch's CPU kernels) through three Conformer blocks: logits up to 1.7 differ by up to
3e-6, hence rtol and atol 1e-5; the CTC loss, a log-sum over alignments of about 130 frames, rel 1e-5
(it differs by 3e-7); gradients of the loss alone rel 1e-4 (atol 1e-6); Hessian-vector products, a
difference of float32 gradients, rel 1e-3 against float64 references for the loss alone and 1e-3 of
each parameter's norm through the model. Evaluation: the loss rel 1e-5 and the word error rate equal
(greedy decoding takes the argmax of logits that agree to 3e-6)."""

from __future__ import annotations

import copy
import itertools

import jax
import numpy as np
import pytest
import torch

from harness import spec
from harness.backends.torch.curvature import twice_differentiable
from harness.discovery import load_workload
from harness.prepare_data import DEFAULT_DATA_DIR
from workloads.espeak_speech.jax import FRAME_MULTIPLE, ctc_loss
from workloads.espeak_speech.torch import ctc_loss as torch_ctc_loss
import parity
from torch_to_flax import conv1d_kernel, dense_kernel, set_path

SEED = 3
RENAMED = {"norm": "ln2"}  # torch's name -> jax.py's, where they differ


def flax_path(torch_name: str) -> str:
    """`blocks.0.convolution.norm` -> `blocks_0/convolution/ln2`: an index joins the name of its container."""
    path: list[str] = []
    for part in torch_name.split("."):
        if part.isdigit():
            path[-1] += f"_{part}"
        else:
            path.append(RENAMED.get(part, part))
    return "/".join(path)


FLAX_WEIGHT = {torch.nn.Linear: "kernel", torch.nn.Conv1d: "kernel", torch.nn.LayerNorm: "scale"}  # torch's `weight`
WEIGHT_LAYOUT = {torch.nn.Linear: dense_kernel, torch.nn.Conv1d: conv1d_kernel,
                 torch.nn.LayerNorm: lambda weight: weight.detach().numpy()}


def convert(model: torch.nn.Module) -> dict:
    """Flax params of the torch Conformer: Linear, Conv1d and LayerNorm layers at their mapped paths."""
    params, converted = {}, set()
    for name, layer in model.named_modules():
        if type(layer) not in FLAX_WEIGHT:
            continue
        for leaf, value in layer.named_parameters(recurse=False):
            if leaf == "weight":
                set_path(params, f"{flax_path(name)}/{FLAX_WEIGHT[type(layer)]}", WEIGHT_LAYOUT[type(layer)](value))
            else:
                set_path(params, f"{flax_path(name)}/{leaf}", value.detach().numpy())
            converted.add(f"{name}.{leaf}")
    assert converted == {name for name, _ in model.named_parameters()}, "some torch parameters have no Flax path"
    return params


def leaf_at(tree: dict, path: str):
    for name in path.split("/"):
        tree = tree[name]
    return tree


def flat(tree: dict) -> dict:
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def pair():
    torch_workload = load_workload("espeak_speech", "pytorch", DEFAULT_DATA_DIR)
    jax_workload = load_workload("espeak_speech", "jax", DEFAULT_DATA_DIR)
    model, _ = torch_workload.init_model_fn(SEED)
    jax_params, jax_state = jax_workload.init_model_fn(SEED)
    params = convert(model)
    assert jax_state == {}
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax_params)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, jax_params)
    batch = torch_workload.host_batch("train", np.arange(8))
    return torch_workload, model, jax_workload, jax_params, jax.device_put(params), batch


def test_parameter_types_match_torch(pair):
    torch_workload, model, jax_workload, *_ = pair
    layers = dict(model.named_modules())
    for torch_name, kind in torch_workload.model_params_types.items():
        module, leaf = torch_name.rsplit(".", 1)
        flax_leaf = FLAX_WEIGHT[type(layers[module])] if leaf == "weight" else leaf
        assert leaf_at(jax_workload.model_params_types, f"{flax_path(module)}/{flax_leaf}") == kind, torch_name
    assert jax_workload.is_output_params("head/kernel") and not jax_workload.is_output_params("ln/scale")


@pytest.mark.parametrize("path, torch_name", [
    ("subsampling/conv1/kernel", "subsampling.conv1.weight"),
    ("subsampling/conv2/bias", "subsampling.conv2.bias"),
    ("blocks_0/convolution/depthwise/kernel", "blocks.0.convolution.depthwise.weight"),
    ("blocks_1/attention/qkv/kernel", "blocks.1.attention.qkv.weight"),
    ("blocks_2/ff2/linear2/kernel", "blocks.2.ff2.linear2.weight"),
    ("blocks_0/ff1/linear1/bias", "blocks.0.ff1.linear1.bias"),
])
def test_jax_initialisation_draws_from_torchs_distributions(pair, path, torch_name):
    _, model, _, jax_params, _, _ = pair
    jax_value, torch_value = np.asarray(leaf_at(jax_params, path)), dict(model.named_parameters())[torch_name]
    assert abs(jax_value.mean()) < 4 * torch_value.std().item() / np.sqrt(jax_value.size)  # 4 standard errors
    assert jax_value.std() == pytest.approx(torch_value.std().item(), rel=0.15)
    assert np.abs(jax_value).max() <= np.abs(torch_value.detach().numpy()).max() * 1.02  # the same uniform bound


@pytest.mark.parametrize("mode", [spec.ForwardPassMode.EVAL, spec.ForwardPassMode.TRAIN])
def test_same_weights_and_batch_give_the_same_logits_and_loss(pair, mode):
    torch_workload, model, jax_workload, _, params, batch = pair
    torch_batch = torch_workload.to_device(batch)
    (logits, paddings), _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, False, dropout_rate=0.0)
    loss = torch_workload.loss_fn(torch_batch["targets"], (logits, paddings))
    jax_batch = jax_workload.to_device(batch)
    (jax_logits, jax_paddings), _ = jax_workload.model_fn(params, jax_batch, {}, mode, 0, False, dropout_rate=0.0)
    jax_loss = jax_workload.loss_fn(jax_batch["targets"], (jax_logits, jax_paddings))
    frames = logits.shape[1]
    assert jax_batch["inputs"].shape[1] % FRAME_MULTIPLE == 0 and jax_logits.shape[1] > frames  # padded further
    np.testing.assert_allclose(np.asarray(jax_logits)[:, :frames], logits.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(jax_paddings)[:, :frames], paddings.numpy())
    assert np.all(np.asarray(jax_paddings)[:, frames:] == 1.0)
    np.testing.assert_allclose(np.asarray(jax_loss["per_example"]), loss["per_example"].detach().numpy(), rtol=1e-5)
    assert float(jax_loss["summed"]) == pytest.approx(loss["summed"].item(), rel=1e-5)
    assert float(jax_loss["n_valid_examples"]) == loss["n_valid_examples"].item() == (batch["targets"] > 0).sum()


def random_ctc_case():
    """Logits (6, 40, 29), paddings, labels: repeated labels, an empty label, an infeasible row (15
    labels in 10 frames), and one whose repeats make it just feasible (5 labels, 2 repeats, 7 frames)."""
    generator = np.random.default_rng(0)
    lengths = np.array([40, 3, 33, 40, 10, 7])
    label_lengths = np.array([0, 1, 15, 7, 15, 5])
    labels = generator.integers(1, 29, (6, 15)) * (np.arange(15) < label_lengths[:, None])
    labels[2, 3:6] = 5
    labels[5, :5] = [4, 4, 9, 9, 2]
    logits = generator.normal(size=(6, 40, 29)).astype(np.float32)
    paddings = (np.arange(40)[None, :] >= lengths[:, None]).astype(np.float32)
    return logits, paddings, labels


def torch_ctc(logits: torch.Tensor, paddings: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """torch.py's per-utterance CTC loss: `F.ctc_loss(zero_infinity=True)`, through `ctc_nll` for second
    derivatives."""
    input_lengths = torch.from_numpy((1 - paddings).sum(1).astype(np.int64))
    return torch_ctc_loss(logits.log_softmax(-1), torch.from_numpy(labels), input_lengths,
                          torch.from_numpy((labels > 0).sum(1)))


def test_ctc_loss_and_its_gradient_match_torchs():
    logits, paddings, labels = random_ctc_case()
    torch_logits = torch.from_numpy(logits).requires_grad_()
    reference = torch_ctc(torch_logits, paddings, labels)
    (reference_grad,) = torch.autograd.grad(reference.sum(), torch_logits)
    mine, grad = jax.value_and_grad(lambda x: ctc_loss(x, paddings, labels).sum())(logits)
    per_example = ctc_loss(logits, paddings, labels)
    assert reference[4].item() == 0.0 and float(per_example[4]) == 0.0 and float(per_example[5]) > 0
    np.testing.assert_allclose(np.asarray(per_example), reference.detach().numpy(), rtol=1e-5)
    assert float(mine) == pytest.approx(reference.sum().item(), rel=1e-5)
    np.testing.assert_allclose(np.asarray(grad), reference_grad.numpy(), rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(grad)[4] == 0.0)  # the infeasible row contributes nothing


def test_loss_counts_target_characters_and_masks_utterances(pair):
    _, _, jax_workload, *_ = pair
    logits, paddings, labels = random_ctc_case()
    per_example = np.asarray(ctc_loss(logits, paddings, labels))
    mask = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0], np.float32)
    out = jax_workload.loss_fn(labels, (logits, paddings), mask_batch=mask, label_smoothing=0.1)
    assert float(out["n_valid_examples"]) == (labels > 0).sum(1) @ mask
    assert float(out["summed"]) == pytest.approx(per_example @ mask, rel=1e-6)
    empty = jax_workload.loss_fn(labels[:1], (logits[:1], paddings[:1]))  # no characters: divide by 1, not 0
    assert float(empty["n_valid_examples"]) == 1.0 and float(empty["summed"]) > 0


def test_hessian_vector_products_through_the_loss_match_torchs():
    """Against torch's double backward (through `ctc_nll`) and a central difference of torch's gradient
    along the probe, both in float64 (torch's float32 double backward is itself off by up to 1e-4 here,
    JAX's float32 by 1e-5). torch's double backward is NaN in the row whose only alignment uses every
    frame (row 5), so that row is compared with the difference alone."""
    logits, paddings, labels = random_ctc_case()
    probe = np.random.default_rng(1).normal(size=logits.shape).astype(np.float32)
    x, v, eps = torch.from_numpy(logits).double().requires_grad_(), torch.from_numpy(probe).double(), 1e-6
    (grad,) = torch.autograd.grad(torch_ctc(x, paddings, labels).sum(), x, create_graph=True)
    (reference,) = torch.autograd.grad(grad, x, grad_outputs=v)

    def torch_grad(at):
        at = at.detach().requires_grad_()
        return torch.autograd.grad(torch_ctc(at, paddings, labels).sum(), at)[0]

    difference = ((torch_grad(x + eps * v) - torch_grad(x - eps * v)) / (2 * eps)).numpy()
    _, hvp = jax.jvp(jax.grad(lambda z: ctc_loss(z, paddings, labels).sum()), (logits,), (probe,))
    hvp = np.asarray(hvp)
    assert np.isfinite(hvp).all() and np.abs(hvp).max() > 0.1 and not hvp[4].any()  # row 4 is infeasible
    np.testing.assert_allclose(hvp[:5], reference.numpy()[:5], rtol=1e-3, atol=5e-5)
    np.testing.assert_allclose(hvp, difference, rtol=1e-3, atol=5e-5)


def test_hessian_vector_products_through_the_model_match_torchs(pair):
    torch_workload, model, jax_workload, _, params, batch = pair
    model = copy.deepcopy(model)
    probes = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in probes.parameters():
            p.copy_(torch.randn_like(p))
    mode = spec.ForwardPassMode.TRAIN
    torch_batch = torch_workload.to_device(batch)
    with twice_differentiable():
        logits, _ = torch_workload.model_fn(model, torch_batch, None, mode, 0, update_batch_norm=True)
        loss = torch_workload.loss_fn(torch_batch["targets"], logits)
        weights = list(model.parameters())
        grads = torch.autograd.grad(loss["summed"] / loss["n_valid_examples"], weights, create_graph=True)
        torch_hvp = torch.autograd.grad(grads, weights, grad_outputs=list(probes.parameters()))
    for weight, value in zip(weights, torch_hvp):
        weight.data.copy_(value)
    expected = flat(convert(model))

    jax_batch = jax_workload.to_device(batch)

    def mean_loss(p):
        out, _ = jax_workload.model_fn(p, jax_batch, {}, mode, 0, update_batch_norm=True)
        summed = jax_workload.loss_fn(jax_batch["targets"], out)
        return summed["summed"] / summed["n_valid_examples"]

    _, hvp = jax.jit(lambda p, v: jax.jvp(jax.grad(mean_loss), (p,), (v,)))(params, jax.device_put(convert(probes)))
    for key, got in flat(hvp).items():
        want = expected[key]
        assert np.linalg.norm(got - want) <= 1e-3 * np.linalg.norm(want), key
        assert np.linalg.norm(want) > 0, key


def test_one_adamw_step_gives_the_same_parameters(pair):
    torch_workload, model, jax_workload, _, params, batch = pair
    moved, expected = parity.adamw_moves(torch_workload, model, jax_workload, params, {}, batch, convert)
    parity.assert_moves_agree(moved, expected)
    assert np.abs(leaf_at(moved, "head/kernel")).max() > 0.5 * parity.LR


def test_evaluation_gives_the_same_metrics(pair):
    """With the head's blank made less likely and the space more, so that the greedy hypotheses have
    words (at initialisation they are empty: a word error rate of exactly 1)."""
    torch_workload, model, jax_workload, *_ = pair
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.head.bias[0] -= 3.0
        model.head.bias[1] += 1.0
    metrics = torch_workload._eval_model_on_split("validation", 100, 50, model, None, 0, DEFAULT_DATA_DIR)
    jax_metrics = jax_workload._eval_model_on_split("validation", 100, 50, jax.device_put(convert(model)), {}, 0,
                                                    DEFAULT_DATA_DIR)
    assert jax_metrics.keys() == metrics.keys() == {"ctc_loss", "wer"}
    assert jax_metrics["ctc_loss"] == pytest.approx(metrics["ctc_loss"], rel=1e-5)
    assert jax_metrics["wer"] == metrics["wer"] and metrics["wer"] not in (0.0, 1.0)


def test_a_trials_batches_take_a_bounded_number_of_shapes(pair):
    """An epoch of batches of 16, and every evaluation batch: frames cut or zero-padded to the longest
    utterance rounded up to a multiple of 64, targets zero-padded to 96 characters, every utterance
    intact; at most one shape per multiple of 64 up to the longest utterance, the splits sharing theirs."""
    _, _, jax_workload, *_ = pair
    most = -(-max(jax_workload.host_split(s)["input_lengths"].max() for s in ("train", "validation", "test"))
             // FRAME_MULTIPLE)
    train_batches = itertools.islice(jax_workload.train_batch_indices(0, "train", 16), 3000 // 16)
    train_shapes = {check_batch(jax_workload, jax_workload.host_batch("train", index)) for index in train_batches}
    eval_shapes = {split: {check_batch(jax_workload, jax_workload.host_eval_batch(split, index))
                           for index in jax_workload.eval_batch_indices(split, size, 50)}
                   for split, size in (("eval_train", 100), ("validation", 300), ("test", 300))}
    assert 2 <= len(train_shapes) <= most == 9
    assert len(set.union(*eval_shapes.values())) < sum(len(shapes) for shapes in eval_shapes.values())


def check_batch(jax_workload, host: dict) -> tuple:
    """The shapes of the batch on the device, after checking that it holds the host batch's utterances."""
    device = jax_workload.to_device(host)
    inputs, targets = np.asarray(device["inputs"]), np.asarray(device["targets"])
    longest, labels = int(host["input_lengths"].max()), host["targets"].shape[1]
    assert inputs.shape[1] % FRAME_MULTIPLE == 0 and 0 <= inputs.shape[1] - longest < FRAME_MULTIPLE
    np.testing.assert_array_equal(inputs[:, :longest], host["inputs"][:, :longest])
    assert not inputs[:, longest:].any()
    assert targets.shape[1] == 96 and not targets[:, labels:].any()
    np.testing.assert_array_equal(targets[:, :labels], host["targets"])
    return inputs.shape, targets.shape


def test_sampled_labels_follow_the_ctc_distribution(pair):
    """As torch.py's test: frequencies of label sequences drawn from 3 frames over (blank, a, b) match
    their CTC probabilities exp(−loss); a padded frame's class is never drawn."""
    _, _, jax_workload, *_ = pair
    logits = np.random.default_rng(0).normal(size=(1, 3, 3)).astype(np.float32)
    n = 20_000
    samples = np.asarray(jax_workload.sample_labels((np.repeat(logits, n, 0), np.zeros((n, 3), np.float32)),
                                                    jax.random.PRNGKey(0)))
    assert samples.shape == (n, 3)
    counts: dict[tuple[int, ...], int] = {}
    for row in samples.tolist():
        key = tuple(i for i in row if i)
        assert list(row[: len(key)]) == list(key)  # left-aligned, zero-padded
        counts[key] = counts.get(key, 0) + 1
    assert (1, 1) in counts and () in counts  # "aa": only the path a-a
    for labels, count in counts.items():
        padded = np.array([list(labels) + [0] * (3 - len(labels))])
        probability = float(np.exp(-ctc_loss(logits, np.zeros((1, 3), np.float32), padded)[0]))
        assert count / n == pytest.approx(probability, abs=0.015), labels
    padded = jax_workload.sample_labels((np.array([[[0.0, 9.0, 0.0], [0.0, 0.0, 9.0]]], np.float32),
                                         np.array([[0.0, 1.0]], np.float32)), jax.random.PRNGKey(1))
    assert np.asarray(padded).tolist() == [[1, 0]]

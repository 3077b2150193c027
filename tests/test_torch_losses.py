"""TorchWorkload.loss_fn against the definitions in AlgoPerf's torch workloads, written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from harness import spec
from support import taken_train_loss
from harness.backends.torch.workload import TorchWorkload


class _Losses(TorchWorkload):
    name = "losses"

    def __init__(self, loss_type: spec.LossType) -> None:
        super().__init__(".")
        self.loss_type = loss_type

    build_model = eval_sums = metrics_from_sums = read_splits = None


def test_softmax_cross_entropy_with_label_smoothing_and_mask():
    workload = _Losses(spec.LossType.SOFTMAX_CROSS_ENTROPY)
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    out = workload.loss_fn(labels, logits, torch.tensor([1.0, 0.0]), label_smoothing=0.3)
    log_p = logits[0] - torch.logsumexp(logits[0], 0)
    smoothed = torch.tensor([0.7 + 0.1, 0.1, 0.1])  # y(1 - s) + s/K
    assert float(out["summed"]) == pytest.approx(float(-(smoothed * log_p).sum()), rel=1e-6)
    assert float(out["n_valid_examples"]) == 1.0


def test_sigmoid_cross_entropy_smooths_labels_towards_one_half_and_counts_labels():
    workload = _Losses(spec.LossType.SIGMOID_CROSS_ENTROPY)
    logits, labels = torch.tensor([[1.5, -0.5], [0.0, 3.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = workload.loss_fn(labels, logits, label_smoothing=0.2)

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = [bce(1.5, 0.9), bce(-0.5, 0.1), bce(0.0, 0.1), bce(3.0, 0.9)]
    assert out["per_example"].tolist() == pytest.approx(expected, rel=1e-6)
    assert float(out["summed"]) == pytest.approx(sum(expected), rel=1e-6)
    assert out["n_valid_examples"] == 4
    masked = workload.loss_fn(labels, logits, torch.tensor([[1.0, 1.0], [0.0, 1.0]]), label_smoothing=0.2)
    assert float(masked["summed"]) == pytest.approx(sum(expected) - expected[2], rel=1e-6)
    assert float(masked["n_valid_examples"]) == 3.0


def test_mean_absolute_error_is_per_example_mean():
    workload = _Losses(spec.LossType.MEAN_ABSOLUTE_ERROR)
    outputs = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    targets = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[1.0, -1.0], [2.0, 0.0]]])
    out = workload.loss_fn(targets, outputs)
    assert out["per_example"].tolist() == pytest.approx([(0 + 1 + 2 + 3) / 4, (1 + 1 + 2 + 0) / 4])
    assert out["n_valid_examples"] == 2
    masked = workload.loss_fn(targets, outputs, torch.tensor([0.0, 1.0]))
    assert float(masked["summed"]) == pytest.approx(1.0) and float(masked["n_valid_examples"]) == 1.0


def test_training_loss_is_recorded_only_with_gradients_on():
    workload = _Losses(spec.LossType.MEAN_ABSOLUTE_ERROR)
    with torch.no_grad():
        workload.loss_fn(torch.zeros(2, 3), torch.ones(2, 3))
    assert taken_train_loss(workload) is None
    workload.loss_fn(torch.zeros(2, 3), torch.full((2, 3), 2.0, requires_grad=True))
    assert taken_train_loss(workload) == pytest.approx(2.0)
    assert taken_train_loss(workload) is None  # taken once


def test_loss_types_without_a_generic_definition_say_so():
    with pytest.raises(NotImplementedError, match="CTC_LOSS"):
        _Losses(spec.LossType.CTC_LOSS).loss_fn(torch.zeros(1), torch.zeros(1))

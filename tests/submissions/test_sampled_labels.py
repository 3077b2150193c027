"""Sophia-G's sampled labels follow the model's predictive distribution for each loss type."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness import spec
from harness.backends.torch.curvature import sampled_labels

N = 40_000


def _workload(loss_type: spec.LossType) -> SimpleNamespace:
    return SimpleNamespace(name="w", loss_type=loss_type)


def test_softmax_labels_follow_the_softmax():
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.0, -1.0]).expand(N, 3)
    labels = sampled_labels(_workload(spec.LossType.SOFTMAX_CROSS_ENTROPY), logits)
    frequencies = torch.bincount(labels, minlength=3).float() / N
    assert frequencies.tolist() == pytest.approx(torch.softmax(logits[0], 0).tolist(), abs=0.01)


def test_sigmoid_labels_are_bernoulli_per_label():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, -1.0]).expand(N, 2)
    labels = sampled_labels(_workload(spec.LossType.SIGMOID_CROSS_ENTROPY), logits)
    assert set(labels.unique().tolist()) == {0.0, 1.0}
    assert labels.mean(0).tolist() == pytest.approx(torch.sigmoid(logits[0]).tolist(), abs=0.01)


def test_absolute_error_labels_are_laplace_around_the_output():
    torch.manual_seed(0)
    outputs = torch.full((N,), 3.0)
    noise = sampled_labels(_workload(spec.LossType.MEAN_ABSOLUTE_ERROR), outputs) - outputs
    assert float(noise.median()) == pytest.approx(0.0, abs=0.02)
    assert float(noise.abs().mean()) == pytest.approx(1.0, abs=0.02)  # E|X| = b = 1


def test_losses_without_a_sampler_name_the_alternative():
    with pytest.raises(ValueError, match="sophia_h"):
        sampled_labels(_workload(spec.LossType.MEAN_SQUARED_ERROR), torch.zeros(3))


def test_a_workload_with_its_own_label_format_samples_them_itself():
    workload = SimpleNamespace(name="ctc", loss_type=spec.LossType.CTC_LOSS, sample_labels=lambda logits: logits[0] + 1)
    assert sampled_labels(workload, (torch.tensor([1, 2]), None)).tolist() == [2, 3]

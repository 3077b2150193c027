"""AdaHessian's spatial averaging of the Hessian diagonal over convolution kernel positions."""

from __future__ import annotations

import pytest
import torch

from harness.backends.torch.curvature import spatially_averaged


def test_matrices_keep_their_absolute_values():
    v = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
    assert torch.equal(spatially_averaged([v])[0], v.abs())


@pytest.mark.parametrize("shape, axes", [((2, 3, 5), (2,)), ((2, 3, 3, 3), (2, 3))])
def test_kernels_are_averaged_over_their_positions(shape, axes):
    v = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    averaged = spatially_averaged([v])[0]
    assert averaged.shape == v.shape
    expected = v.abs().mean(dim=axes, keepdim=True).expand_as(v)
    torch.testing.assert_close(averaged, expected)
    assert torch.allclose(averaged.sum(dim=axes), v.abs().sum(dim=axes))  # totals per kernel are kept


def test_other_ranks_are_refused():
    with pytest.raises(ValueError, match="5-D"):
        spatially_averaged([torch.zeros(1, 1, 1, 1, 1)])

"""Framework-free batching: the epoch order replays torch's seeded permutations, and the batch
indices every framework trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import batching


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1])
def test_epoch_order_gives_torch_randperms_permutations_call_after_call(seed):
    generator, order = torch.Generator().manual_seed(seed), batching.EpochOrder(seed)
    for n in (0, 1, 2, 3, 17, 4_999, 55_000, 8, 25_245):
        expected = torch.randperm(n, generator=generator).numpy()
        np.testing.assert_array_equal(order.permutation(n), expected)


def test_epoch_order_seeds_are_32_bit():
    with pytest.raises(ValueError, match="32-bit unsigned"):
        batching.EpochOrder(2**32)
    with pytest.raises(ValueError, match="32-bit unsigned"):
        batching.EpochOrder(-1)


def test_epoch_batches_cover_each_epoch_once_and_drop_the_incomplete_batch():
    batches = batching.epoch_batches(batching.EpochOrder(3), 10, 4)
    first_epoch = np.concatenate([next(batches), next(batches)])
    assert len(set(first_epoch.tolist())) == 8  # 2 batches of 4; the last 2 examples of the epoch dropped
    second_epoch = np.concatenate([next(batches), next(batches)])
    assert not np.array_equal(first_epoch, second_epoch)
    with pytest.raises(ValueError, match="batch size 11 exceeds the 10 examples of split 'train'"):
        batching.check_batch_size(11, 10, "train")


def test_pooled_batches_hold_similar_lengths_and_cover_the_epoch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 200)
    batches = batching.pooled_epoch_batches(batching.EpochOrder(5), lengths, 10, pool_batches=4)
    epoch = [next(batches) for _ in range(20)]
    assert sorted(np.concatenate(epoch).tolist()) == list(range(200))
    spread = np.mean([np.ptp(lengths[b]) for b in epoch])
    random_spread = np.mean([np.ptp(lengths[b]) for b in np.split(rng.permutation(200), 20)])
    assert spread < random_spread / 2  # sorted within pools of 40: batches of neighbours in length


def test_in_order_batches_follow_the_given_order():
    assert [b.tolist() for b in batching.in_order(5, 2)] == [[0, 1], [2, 3], [4]]
    order = np.array([4, 2, 0, 1, 3])
    assert [b.tolist() for b in batching.in_order(5, 3, order)] == [[4, 2, 0], [1, 3]]

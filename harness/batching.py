"""Which examples form each batch: epoch order and batch indices, framework-free (NumPy).

Every framework trains on the same batches: a workload's `train_batch_indices` and
`eval_batch_indices` (spec.Workload) are built from these, and a backend only puts the assembled
NumPy batch on its device.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class EpochOrder:
    """Seeded permutations, one per call: Fisher–Yates over the MT19937 generator.

    For i = 0 … n − 2, position i swaps with position i + (u_i mod (n − i)), u_i the generator's next
    32-bit output. With the generator seeded by `seed` (MT19937's `init_genrand`) this is the
    permutation `torch.randperm(n, generator=torch.Generator().manual_seed(seed))` gives on a CPU, call
    after call, so the epochs of runs made when batching lived in the torch backend are replayed
    exactly (tests/test_batching.py checks it against torch).
    """

    def __init__(self, seed: int) -> None:
        seed = int(seed)
        if not 0 <= seed < 2**32:
            raise ValueError(f"an epoch-order seed is a 32-bit unsigned integer, got {seed}")
        self._generator = np.random.RandomState(seed)

    def permutation(self, n: int) -> np.ndarray:
        """The next permutation of range(n), as int64."""
        draws = self._generator.randint(0, 2**32, size=max(n - 1, 0), dtype=np.uint64)
        partners = (draws % np.arange(n, 1, -1, dtype=np.uint64) + np.arange(n - 1, dtype=np.uint64)).tolist()
        order = list(range(n))
        for i, j in enumerate(partners):
            order[i], order[j] = order[j], order[i]
        return np.array(order, dtype=np.int64)


def check_batch_size(global_batch_size: int, n: int, split: str) -> None:
    if global_batch_size > n:
        raise ValueError(f"batch size {global_batch_size} exceeds the {n} examples of split {split!r}")


def epoch_batches(order: EpochOrder, n: int, global_batch_size: int) -> Iterator[np.ndarray]:
    """Endless epochs of `order`'s permutations cut into batches; an epoch's last incomplete batch is dropped."""
    while True:
        permutation = order.permutation(n)
        for start in range(0, n - global_batch_size + 1, global_batch_size):
            yield permutation[start : start + global_batch_size]


def pooled_epoch_batches(order: EpochOrder, lengths: np.ndarray, global_batch_size: int,
                         pool_batches: int) -> Iterator[np.ndarray]:
    """Endless epochs batched by length: each epoch's permutation (less its last n mod batch examples)
    is cut into pools of `pool_batches` batches, each pool sorted by `lengths` (stably) and cut into
    batches, and the epoch's batches are shuffled by the next permutation of `order`."""
    n = len(lengths)
    pool = pool_batches * global_batch_size
    while True:
        permutation = order.permutation(n)[: n - n % global_batch_size]
        epoch = []
        for start in range(0, len(permutation), pool):
            chunk = permutation[start : start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            epoch += [chunk[i : i + global_batch_size] for i in range(0, len(chunk), global_batch_size)]
        for i in order.permutation(len(epoch)).tolist():
            yield epoch[i]


def in_order(num_examples: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The first `num_examples` examples (or `order`, a permutation of them) in batches of `batch_size`."""
    order = np.arange(num_examples) if order is None else order
    for start in range(0, num_examples, batch_size):
        yield order[start : start + batch_size]

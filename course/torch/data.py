"""Random (x, y) batches as a `torch.utils.data.DataLoader`, identical to `get_batch`.

`make_loader(data, batch_size, block_size, seed)` yields, batch for batch, exactly what

    rng = np.random.default_rng(seed)
    while True:
        x, y = course.data.get_batch(data, batch_size, block_size, rng)

yields, as int64 tensors of shape (B, T). `course.tf.data.make_dataset` yields the same
batches as tf.data, so both frameworks can be trained on identical data.

Workers: with `num_workers=W > 0`, every worker re-creates the one generator from `seed`
and walks the whole sequence of offsets (drawing them is cheap), but slices only the
batches k with k % W == its worker id. The DataLoader asks its workers in turn (worker
k % W for batch k) and returns their batches in that order, so the stream stays
identical and in order whatever W is. Each new iteration over the loader starts again
from `seed`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from course.data import as_token_array, batch_offsets, blocks_at, check_batch_args, check_int


class RandomBlocks(IterableDataset):
    """Endless (or `steps` long) stream of whole batches (x, y): int64 tensors (B, T).

    Batch k is the k-th `get_batch(data, batch_size, block_size, rng)` with
    rng = np.random.default_rng(seed). Use it with `DataLoader(..., batch_size=None)`
    (the batches are already batched), or simply call `make_loader`.
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        block_size: int,
        seed: int,
        steps: int | None = None,
    ) -> None:
        super().__init__()
        self.data = as_token_array(data)  # a memmap stays one (copied only if pickled)
        check_batch_args(len(self.data), batch_size, block_size, seed=seed, steps=steps)
        self.batch_size, self.block_size = int(batch_size), int(block_size)
        self.seed, self.steps = int(seed), steps

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an endless RandomBlocks (steps=None) has no length")
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        worker_id, n_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        rng = np.random.default_rng(self.seed)
        k = 0
        while self.steps is None or k < self.steps:
            # every worker draws every batch's offsets, to keep the one generator's sequence
            offsets = batch_offsets(len(self.data), self.batch_size, self.block_size, rng)
            if k % n_workers == worker_id:
                x, y = blocks_at(self.data, offsets, self.block_size)
                yield torch.from_numpy(x), torch.from_numpy(y)
            k += 1


def make_loader(
    data: Any,
    batch_size: int,
    block_size: int,
    seed: int,
    num_workers: int = 0,
    steps: int | None = None,
) -> DataLoader:
    """A DataLoader of (x, y) int64 tensors (B, T), identical to repeated `get_batch` calls.

    `steps=None` gives an endless loader (stop it yourself, e.g. with `zip(range(n), ...)`);
    `num_workers > 0` slices in worker processes and keeps the same batches in the same
    order (see the module docstring). `data` may be a np.memmap. The batches are CPU
    tensors, as a DataLoader's are: move each to the model's device (`x.to(device)`).
    """
    check_int("num_workers", num_workers, 0)
    dataset = RandomBlocks(data, batch_size, block_size, seed, steps)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers)

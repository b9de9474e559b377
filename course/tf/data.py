"""Random (x, y) batches as a `tf.data.Dataset`, identical to `course.data.get_batch`.

`make_dataset(data, batch_size, block_size, seed)` yields, batch for batch, exactly what

    rng = np.random.default_rng(seed)
    while True:
        x, y = course.data.get_batch(data, batch_size, block_size, rng)

yields, as int64 tensors of shape (B, T), the same as `course.torch.data.make_loader`.

How: the start offsets come from numpy (`batch_offsets` with the one generator), because
TensorFlow's random ops draw other numbers. They are the only Python part: a dataset of
offsets (precomputed for a fixed number of steps, or drawn by a generator when endless) is
mapped, in parallel and in order, to `tf.gather` on the token array held as one tensor
(about 2 MB for Tiny Shakespeare in uint16). Each iteration starts again from `seed`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from course import runtime
from course.data import as_token_array, batch_offsets, check_batch_args

tf = runtime.import_tensorflow()  # never `import tensorflow` directly: see runtime


def make_dataset(
    data: Any,
    batch_size: int,
    block_size: int,
    seed: int,
    steps: int | None = None,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """A tf.data.Dataset of (x, y) int64 tensors (B, T), identical to repeated `get_batch`.

    `steps=None` gives an endless dataset (use `.take(n)`); `prefetch=True` prepares the
    next batches while the model trains. `data` may be a np.memmap.
    """
    tokens_np = as_token_array(data)
    n_tokens = len(tokens_np)
    check_batch_args(n_tokens, batch_size, block_size, seed=seed, steps=steps)
    batch_size, block_size, seed = int(batch_size), int(block_size), int(seed)

    if steps is not None:  # all offsets at once: the pipeline then runs without Python
        rng = np.random.default_rng(seed)
        offsets = np.stack(
            [batch_offsets(n_tokens, batch_size, block_size, rng) for _ in range(steps)]
        )  # (steps, B)
        offsets_ds = tf.data.Dataset.from_tensor_slices(offsets)
    else:

        def draw_offsets():
            rng = np.random.default_rng(seed)  # a fresh generator for each iteration
            while True:
                yield batch_offsets(n_tokens, batch_size, block_size, rng)

        offsets_ds = tf.data.Dataset.from_generator(
            draw_offsets, output_signature=tf.TensorSpec((batch_size,), tf.int64)
        )

    # uint16 tokens stay 2 bytes each in the tensor; wider ids are held as int64
    held = (
        tokens_np
        if tokens_np.dtype in (np.uint8, np.uint16, np.int32)
        else tokens_np.astype(np.int64)
    )
    tokens = tf.constant(np.ascontiguousarray(held))  # copies a memmap into memory once
    steps_in_block = tf.range(block_size + 1, dtype=tf.int64)

    def to_blocks(offsets):  # (B,) -> x, y (B, T)
        window = tf.gather(tokens, offsets[:, None] + steps_in_block[None, :])  # (B, T + 1)
        window = tf.cast(window, tf.int64)
        x = tf.ensure_shape(window[:, :-1], (batch_size, block_size))
        y = tf.ensure_shape(window[:, 1:], (batch_size, block_size))
        return x, y

    dataset = offsets_ds.map(to_blocks, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset

"""FlashAttention's algorithm in `keras.ops`: the mirror of `course.torch.flash`.

The same recurrence as the PyTorch version, tile by tile with an online softmax: per query
row a running max, a running sum of exponentials and a running output, rescaled by
exp(m - m') whenever a key tile raises the max from m to m'. TensorFlow has no
hand-written-kernel story like Triton's: a loop like this one is what XLA is left to fuse,
and chapter 07 compares it with `keras.ops.dot_product_attention` and XLA's own fusion of
plain attention.

Shapes: q (B, H, T_q, D), k and v (B, H, T_k, D); the queries are the last T_q of the T_k
positions, so with `causal` query i sees keys 0 .. i + T_k - T_q.
"""

from __future__ import annotations

import math

from course.runtime import import_keras

keras = import_keras()
ops = keras.ops


def tiled_attention(q, k, v, causal: bool = True, block_m: int = 32, block_n: int = 32):
    """(o, lse) as `course.torch.flash.tiled_attention`: o (B, H, T_q, D), lse (B, H, T_q),
    computed in float32 one (block_m, block_n) tile of scores at a time."""
    _check(q, k, v, block_m, block_n)
    T_q, T_k, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(D)
    dtype = keras.backend.standardize_dtype(q.dtype)
    q, k, v = (ops.cast(t, "float32") for t in (q, k, v))
    outputs, lses = [], []
    for start_m in range(0, T_q, block_m):
        stop_m = min(start_m + block_m, T_q)
        q_tile = q[:, :, start_m:stop_m, :]  # (B, H, M, D)
        row_max = ops.full(ops.shape(q_tile)[:-1], float("-inf"))  # (B, H, M)
        row_sum = ops.zeros_like(row_max)
        acc = ops.zeros_like(q_tile)
        end = min(T_k, stop_m + (T_k - T_q)) if causal else T_k
        for start_n in range(0, end, block_n):
            stop_n = min(start_n + block_n, T_k)
            scores = ops.matmul(q_tile, ops.swapaxes(k[:, :, start_n:stop_n, :], -1, -2)) * scale
            if causal:
                rows = ops.arange(start_m, stop_m)[:, None] + (T_k - T_q)
                visible = ops.arange(start_n, stop_n)[None, :] <= rows  # (M, N)
                scores = ops.where(visible, scores, float("-inf"))
            new_max = ops.maximum(row_max, ops.max(scores, axis=-1))
            rescale = ops.exp(row_max - new_max)
            p = ops.exp(scores - new_max[..., None])
            row_sum = row_sum * rescale + ops.sum(p, axis=-1)
            acc = acc * rescale[..., None] + ops.matmul(p, v[:, :, start_n:stop_n, :])
            row_max = new_max
        outputs.append(acc / row_sum[..., None])
        lses.append(row_max + ops.log(row_sum))
    return ops.cast(ops.concatenate(outputs, axis=-2), dtype), ops.concatenate(lses, axis=-1)


def _check(q, k, v, block_m, block_n) -> None:
    shapes = [tuple(t.shape) for t in (q, k, v)]
    if any(len(shape) != 4 for shape in shapes):
        raise ValueError(f"q, k, v must be 4-D (B, H, T, D), got shapes {shapes}")
    (B, H, T_q, D), k_shape = shapes[0], shapes[1]
    if k_shape != shapes[2] or k_shape[:2] != (B, H) or k_shape[3] != D:
        raise ValueError(
            f"q (B, H, T_q, D), k and v (B, H, T_k, D) must agree, got {shapes[0]}, {k_shape}, "
            f"{shapes[2]}"
        )
    if not 1 <= T_q <= k_shape[2]:
        raise ValueError(f"need 1 <= T_q <= T_k, got T_q={T_q}, T_k={k_shape[2]}")
    for name, block in (("block_m", block_m), ("block_n", block_n)):
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"{name} must be a positive int, got {block!r}")

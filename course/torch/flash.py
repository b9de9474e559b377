"""FlashAttention's algorithm in plain PyTorch: attention a tile at a time, with an online
softmax, never holding the whole (T_q, T_k) matrix of scores.

Chapter 07 writes this before the Triton kernel (`kernels/attention.py`) does the same
thing in one program per query tile: here the loops are Python loops, so every step can be
printed and checked. For each tile of `block_m` queries it walks the keys `block_n` at a
time, keeping per query row a running max `row_max`, a running sum `row_sum` of
exp(score - row_max) and a running output `acc`; when a key tile raises the max from m to
m', the sum and the output so far are rescaled by exp(m - m'). At the end acc / row_sum is
the softmax-weighted sum of v, and row_max + log(row_sum) the log-sum-exp L of the row.

Shapes as torch's scaled_dot_product_attention: q (B, H, T_q, D), k and v (B, H, T_k, D),
scale 1/√D; the queries are the last T_q of the T_k positions (a KV cache), so with
`causal` query i sees keys 0 .. i + T_k - T_q.
"""

from __future__ import annotations

import math

import torch


def tiled_attention(q, k, v, causal: bool = True, block_m: int = 32, block_n: int = 32):
    """(o, lse): o (B, H, T_q, D) = softmax(q kᵀ / √D + mask) v in q's dtype, and lse
    (B, H, T_q) float32, the log-sum-exp of each query's visible scaled scores. Computed one
    (block_m, block_n) tile of scores at a time, in float32."""
    _check(q, k, v, block_m, block_n)
    T_q, T_k, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(D)
    q32, k32, v32 = q.float(), k.float(), v.float()
    outputs, lses = [], []
    for start_m in range(0, T_q, block_m):
        rows = torch.arange(start_m, min(start_m + block_m, T_q), device=q.device)
        q_tile = q32[..., rows, :]  # (B, H, M, D)
        row_max = torch.full(q_tile.shape[:-1], float("-inf"), device=q.device)  # (B, H, M)
        row_sum = torch.zeros_like(row_max)
        acc = torch.zeros_like(q_tile)  # (B, H, M, D)
        # With `causal`, keys after this tile's last query are invisible to all of it.
        end = min(T_k, int(rows[-1]) + 1 + (T_k - T_q)) if causal else T_k
        for start_n in range(0, end, block_n):
            cols = torch.arange(start_n, min(start_n + block_n, T_k), device=q.device)
            scores = q_tile @ k32[..., cols, :].transpose(-2, -1) * scale  # (B, H, M, N)
            if causal:
                visible = cols[None, :] <= rows[:, None] + (T_k - T_q)  # (M, N)
                scores = scores.masked_fill(~visible, float("-inf"))
            new_max = torch.maximum(row_max, scores.amax(dim=-1))
            rescale = torch.exp(row_max - new_max)  # shrinks what was summed so far
            p = torch.exp(scores - new_max[..., None])  # 0 where invisible
            row_sum = row_sum * rescale + p.sum(dim=-1)
            acc = acc * rescale[..., None] + p @ v32[..., cols, :]
            row_max = new_max
        outputs.append(acc / row_sum[..., None])
        lses.append(row_max + torch.log(row_sum))
    return torch.cat(outputs, dim=-2).to(q.dtype), torch.cat(lses, dim=-1)


def _check(q, k, v, block_m, block_n) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a 4-D tensor (B, H, T, D), got {got}")
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"q (B, H, T_q, D), k and v (B, H, T_k, D) must agree, got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[-2] > k.shape[-2] or q.shape[-2] == 0:
        raise ValueError(f"need 1 <= T_q <= T_k, got T_q={q.shape[-2]}, T_k={k.shape[-2]}")
    for name, block in (("block_m", block_m), ("block_n", block_n)):
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"{name} must be a positive int, got {block!r}")

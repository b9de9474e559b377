# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 07 Fused attention kernels
# Run this cell first. On Colab it installs the course library with this chapter's extras,
# keeping Colab's own PyTorch and TensorFlow; on your machine or on Binder the library is
# already there and nothing is installed.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("course") is None:
    extras = {"torch": "torch", "triton": "triton", "tf": "tensorflow"}  # extra: the module it installs
    missing = ",".join(e for e, module in extras.items() if not importlib.util.find_spec(module))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         f"twin-gpt[{missing}] @ git+https://github.com/twin-gpt/twin-gpt@v0.1.0"],
        check=True,
    )
from course import runtime

print(runtime.versions_line())

# %% tags=["parameters"] nbgrader={"grade": false, "grade_id": "parameters", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Parameters (this cell is tagged `parameters`). COURSE_SMOKE=1 runs everything small and fast.
SMOKE = runtime.smoke_mode()
TIMING_T = (64, 128) if SMOKE else (128, 256, 512)  # sequence lengths of the timing table
TIMING_REPEATS = 3 if SMOKE else 10  # calls per measurement (the median is kept)
INTERPRETED_T_MAX = 128  # longest T timed in Triton's interpreter (it is slow: ~1 s a call)
GPT_BATCH = 2 if SMOKE else 4  # sequences for the GPT checks with your kernels
GREEDY_TOKENS = 8 if SMOKE else 24  # tokens generated greedily with the KV cache
SEED = 0

# %% [markdown]
# # 07 · Fused attention kernels
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/07_flash_attention/07_flash_attention.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 85 min to work through; the code runs in at most 1 min on 2 CPU cores.
#
# **You will be able to**
#
# - launch a Triton kernel on a grid of programs, and mask its loads and stores so that any
#   length works
# - fuse a row's max, exponentials and sum into one kernel, and compute a softmax over a row
#   longer than the block with a running max and a rescaled running sum
# - write FlashAttention's forward as tiled attention in PyTorch and as a Triton kernel
#   (causal mask, ragged lengths, KV-cache offsets, strided inputs), keeping only the
#   log-sum-exp for the backward
# - derive the backward from P = exp(S - L): Delta = rowsum(O * dO), dS = P * (dP - Delta),
#   and write Delta and dQ as kernels
# - read what `torch.compile` (C++/OpenMP on a CPU, Triton on a GPU) and XLA's fusions
#   generate, and time them against hand-written kernels
#
# **Before you start:** chapters 04 (Attention), 05 (The GPT) and 06 (The same GPT in Keras
# 3). From outside the course: pointers and strides (how a tensor sits in memory); the
# softmax's derivative.
# <!-- end of the chapter card -->
#
# Attention as chapter 04 wrote it computes a (T, T) matrix of scores, writes it to memory,
# reads it back for the softmax, writes the weights, and reads them again to multiply by
# v. On a GPU, memory traffic, not arithmetic, is what this costs, and for long sequences
# the matrix does not even fit. **FlashAttention** never stores it: a program takes a tile
# of queries, walks over the keys a tile at a time, and keeps a *running* softmax.
#
# This chapter writes that kernel in **Triton**, a Python dialect for GPU kernels, in six
# steps, each a graded exercise:
#
# 1. a masked vector add: programs, blocks, masks;
# 2. a fused row softmax: a whole row in one program;
# 3. the online softmax: a row longer than the block, with a running max and sum;
# 4. tiled attention in plain PyTorch: the algorithm, without Triton;
# 5. the FlashAttention forward kernel, with the causal flag;
# 6. its backward: Delta and dQ, recomputing the weights instead of storing them.
#
# Then your kernels run the chapter 05 GPT, and you see what `torch.compile` writes for you.
# TensorFlow has no hand-written-kernel story of this kind: its answer is the compiler,
# XLA. The last part looks at what XLA fuses in the Keras GPT's attention, times everything
# side by side, and has you write the online softmax once more, in `keras.ops`.
#
# **No GPU needed.** Without one, Triton runs your kernels in its *interpreter*, in numpy:
# the same code, the same results, slowly. Every test runs your kernel in a child process
# (a wrong address can crash the interpreter, not this notebook) and surrounds each output
# with NaN "canaries": an output left NaN was never written, and a canary overwritten means
# a store landed outside the output. `kernels.testing` holds that harness.

# %%
# Triton first: on a machine without a GPU this switches its kernels to the interpreter
# (TRITON_INTERPRET=1), which must happen before any kernel is defined; then TensorFlow,
# in the one order in which the two load together.
triton = runtime.use_triton()
tf = runtime.import_tensorflow()

import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from course import checks, learner
from course.config import get_preset
from course.torch import GPT, generate
from course.torch.model import manual_attention
from kernels.testing import (
    attention_inputs,
    backward_case,
    forward_case,
    kernel_device,
    reference_attention,
    run_isolated,
    softmax_case,
    vector_add_case,
)

tl = triton.language
attention = runtime.import_kernels("attention")  # the library's kernels, for comparison
runtime.seed_everything(SEED)
print("kernels run", "in Triton's interpreter (CPU)" if attention.interpreted() else "compiled")

# %% [markdown]
# ## Exercise 1 · a masked vector add
#
# A Triton kernel is a function decorated with `@triton.jit`, launched on a *grid* of
# programs: `add_kernel[(n_programs,)](x, y, out, n, BLOCK=64)`. Tensors arrive as
# pointers to their first element. Each program finds out which one it is with
# `tl.program_id(0)` and works on a whole block of elements at once: `tl.arange(0, BLOCK)`
# is a vector of BLOCK offsets, `tl.load(x_ptr + offsets)` loads BLOCK values, and
# `tl.store(out_ptr + offsets, values)` writes them. `BLOCK` is a `tl.constexpr`: fixed
# when the kernel is compiled, and a power of two.
#
# With n = 1000 and BLOCK = 64, the launcher starts `cdiv(1000, 64) = 16` programs; the
# last one covers elements 960..1023, but only 960..999 exist. Give `tl.load` and
# `tl.store` a `mask=` (a vector of booleans) so that the lanes past `n` do nothing.
#
# Write `add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK)`: program p writes
# `out[i] = x[i] + y[i]` for i in p·BLOCK .. p·BLOCK + BLOCK - 1 with i < n. The launcher
# is the library's (`kernels.vector_add.add(x, y, kernel=add_kernel)`).

# %% nbgrader={"grade": false, "grade_id": "add_kernel", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out[i] = x[i] + y[i] for this program's BLOCK elements that exist (i < n)."""
    ### BEGIN SOLUTION
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_ptr + offsets, mask=inside)
    y = tl.load(y_ptr + offsets, mask=inside)
    tl.store(out_ptr + offsets, x + y, mask=inside)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_add_kernel", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""add_kernel: every element of out written, nothing outside it, out = x + y."""
result = run_isolated(vector_add_case, add_kernel, 1000)
assert result.strays["out"] == 0, (
    f"{result.strays['out']} value(s) were written past the end of out: mask the tl.store"
)
assert result.unwritten["out"] == 0, (
    f"{result.unwritten['out']} element(s) of out were never written: does program p start "
    "at p * BLOCK?"
)
result.check(atol=1e-6)
run_isolated(vector_add_case, add_kernel, 64).check(atol=1e-6)  # exactly one block
### BEGIN HIDDEN TESTS
for n in (1, 63, 65, 4097):
    run_isolated(vector_add_case, add_kernel, n, seed=n).check(atol=1e-6)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2 · a fused row softmax
#
# One program per row: load the row once, compute its max, the exponentials and their
# sum, and store the result, all without going back to memory. That is what *fused*
# means, and why a kernel can beat three separate operations when memory is the bottleneck.
#
# `tl.arange` needs a power of two, so BLOCK is the row length rounded up
# (`triton.next_power_of_2(n_cols)`) and the lanes past the row's end are masked. What
# should a masked lane *load*? Not 0: exp(0 - max) would add to the sum. Load
# `other=-float("inf")`: it can never be the max, and exp(-inf) = 0. Subtract the row's max
# before `tl.exp` (chapter 00), compute in float32 (`x.to(tl.float32)`), and store in the
# output's type (`y.to(y_ptr.dtype.element_ty)`).
#
# The input may be a transposed view: element (row, col) of x is at
# `x_ptr + row * x_row_stride + col * x_col_stride`. The output is contiguous (column
# stride 1). Row offsets can exceed 2³¹ on big tensors: `tl.program_id(0).to(tl.int64)`.

# %% nbgrader={"grade": false, "grade_id": "softmax_kernel", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def softmax_kernel(
    x_ptr, y_ptr, n_cols, x_row_stride, x_col_stride, y_row_stride, BLOCK: tl.constexpr
):
    """y[row] = softmax(x[row]) for this program's row, the whole row in one block."""
    ### BEGIN SOLUTION
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols * x_col_stride, mask=inside, other=-float("inf"))
    x = x.to(tl.float32)
    numerator = tl.exp(x - tl.max(x, axis=0))
    y = numerator / tl.sum(numerator, axis=0)
    tl.store(y_ptr + row * y_row_stride + cols, y.to(y_ptr.dtype.element_ty), mask=inside)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_softmax_kernel", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""softmax_kernel: rows of any length, large logits, rows read through their strides."""
result = run_isolated(softmax_case, softmax_kernel, rows=7, cols=100)
assert result.strays["y"] == 0, "values were written outside y: mask the tl.store"
assert result.unwritten["y"] == 0, "some of y is NaN: never written, or exp overflowed"
result.check(atol=1e-6)
run_isolated(softmax_case, softmax_kernel, rows=5, cols=37, scale=1000.0).check(atol=1e-6)
### BEGIN HIDDEN TESTS
run_isolated(softmax_case, softmax_kernel, rows=9, cols=64, seed=3).check(atol=1e-6)
run_isolated(softmax_case, softmax_kernel, rows=6, cols=50, transposed=True).check(atol=1e-6)
run_isolated(softmax_case, softmax_kernel, rows=3, cols=1, seed=4).check(atol=1e-6)
run_isolated(softmax_case, softmax_kernel, rows=4, cols=300, scale=200.0, seed=5).check(atol=1e-6)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 3 · the online softmax
#
# A row of 50,257 logits (GPT-2's vocabulary) still fits one program; an attention row of
# a million keys does not, and FlashAttention's rows arrive a tile at a time anyway. The
# online softmax reads a row in blocks and keeps two numbers: the max so far, m, and the
# sum so far of exp(x - m), s. When a block raises the max to m', the sum must be
# rescaled, because its terms were computed against the old max:
#
# $$ m' = \max(m, \max_j x_j), \qquad s' = s\, e^{m - m'} + \sum_j e^{x_j - m'} $$
#
# After the first pass, m is the row's max and s its sum of exponentials; a second pass
# writes exp(x - m) / s. Start from m = -inf and s = 0: the first block's rescale is then
# exp(-inf) = 0. Scalars are tensors in Triton: `tl.full([], -float("inf"), tl.float32)`.
#
# Write `online_softmax_kernel` with the same arguments as `softmax_kernel`; now BLOCK is
# smaller than the row (the launcher uses 32 here), so each pass is a
# `for start in range(0, n_cols, BLOCK)` loop.

# %% nbgrader={"grade": false, "grade_id": "online_softmax_kernel", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def online_softmax_kernel(
    x_ptr, y_ptr, n_cols, x_row_stride, x_col_stride, y_row_stride, BLOCK: tl.constexpr
):
    """y[row] = softmax(x[row]) for a row of any length, BLOCK entries at a time."""
    ### BEGIN SOLUTION
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    row_max = tl.full([], -float("inf"), tl.float32)
    row_sum = tl.zeros([], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols * x_col_stride, mask=cols < n_cols, other=-float("inf"))
        new_max = tl.maximum(row_max, tl.max(x.to(tl.float32), axis=0))
        row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
        row_max = new_max
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inside = cols < n_cols
        x = tl.load(x_row + cols * x_col_stride, mask=inside, other=-float("inf"))
        y = tl.exp(x.to(tl.float32) - row_max) / row_sum
        tl.store(y_ptr + row * y_row_stride + cols, y.to(y_ptr.dtype.element_ty), mask=inside)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_online_softmax_kernel", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""online_softmax_kernel: rows several blocks long, the running sum rescaled as the max grows."""
result = run_isolated(softmax_case, online_softmax_kernel, rows=5, cols=200, online=True, block=32)
assert result.strays["y"] == 0, "values were written outside y: mask the tl.store"
assert result.unwritten["y"] == 0, "some of y is NaN: never written, or a sum of 0 or inf"
result.check(atol=1e-6)
# Logits spread x30: a later block often raises a row's max, and a sum not rescaled shows.
ramp = run_isolated(softmax_case, online_softmax_kernel, rows=3, cols=150, online=True,
                    block=32, scale=30.0, seed=1)
ramp.check(atol=1e-6)
### BEGIN HIDDEN TESTS
for cols, block, seed in ((31, 32, 2), (64, 16, 3), (333, 64, 4)):
    run_isolated(softmax_case, online_softmax_kernel, rows=4, cols=cols, online=True,
                 block=block, scale=10.0, seed=seed).check(atol=1e-6)
run_isolated(softmax_case, online_softmax_kernel, rows=6, cols=90, online=True, block=16,
             transposed=True, scale=1000.0).check(atol=1e-6)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 4 · tiled attention, in plain PyTorch
#
# FlashAttention is the online softmax with one more running quantity. For a tile of
# queries, walk over the keys a tile at a time; per query row keep the running max
# `row_max`, the running sum `row_sum` of exp(score - row_max), and a running output `acc`,
# the sum of exp(score - row_max) · v. When a key tile raises the max, **both** `row_sum`
# and `acc` are rescaled by exp(old max - new max). At the end, o = acc / row_sum, and the
# log-sum-exp of the row is L = row_max + log(row_sum): the backward pass will rebuild the
# weights from it as exp(score - L).
#
# Write it first without Triton, with Python loops over tiles: `tiled_attention(q, k, v,
# causal, block_m, block_n)` returns (o, L). q is (B, H, T_q, D), k and v (B, H, T_k, D),
# scale 1/√D. With a KV cache the queries are the *last* T_q of the T_k positions, so with
# `causal`, query i sees key j when j ≤ i + (T_k - T_q). Compute in float32. With
# `causal`, a query tile need not visit key tiles that start after its last query's
# position. Never build the whole (T_q, T_k) matrix: the point is that it is never needed.

# %% nbgrader={"grade": false, "grade_id": "tiled_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def tiled_attention(q, k, v, causal=True, block_m=32, block_n=32):
    """(o (B, H, T_q, D), lse (B, H, T_q)), one (block_m, block_n) tile of scores at a time."""
    ### BEGIN SOLUTION
    T_q, T_k, D = q.shape[-2], k.shape[-2], q.shape[-1]
    q, k, v = q.float(), k.float(), v.float()
    outputs, lses = [], []
    for start_m in range(0, T_q, block_m):
        rows = torch.arange(start_m, min(start_m + block_m, T_q), device=q.device)
        row_max = torch.full(q.shape[:2] + rows.shape, float("-inf"), device=q.device)
        row_sum = torch.zeros_like(row_max)
        acc = torch.zeros(q.shape[:2] + (len(rows), D), device=q.device)
        end = min(T_k, int(rows[-1]) + 1 + T_k - T_q) if causal else T_k
        for start_n in range(0, end, block_n):
            cols = torch.arange(start_n, min(start_n + block_n, T_k), device=q.device)
            scores = q[..., rows, :] @ k[..., cols, :].transpose(-2, -1) / math.sqrt(D)
            if causal:
                visible = cols[None, :] <= rows[:, None] + T_k - T_q
                scores = scores.masked_fill(~visible, float("-inf"))
            new_max = torch.maximum(row_max, scores.amax(dim=-1))
            rescale = torch.exp(row_max - new_max)
            p = torch.exp(scores - new_max[..., None])
            row_sum = row_sum * rescale + p.sum(dim=-1)
            acc = acc * rescale[..., None] + p @ v[..., cols, :]
            row_max = new_max
        outputs.append(acc / row_sum[..., None])
        lses.append(row_max + torch.log(row_sum))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_tiled_attention", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""tiled_attention: softmax(q kᵀ/√D + mask) v and its log-sum-exp, tile by tile."""
def check_tiled(shape, causal, block_m, block_n, seed=0):
    q, k, v = attention_inputs(*shape, seed=seed)
    o, lse = tiled_attention(q, k, v, causal=causal, block_m=block_m, block_n=block_n)
    want_o, want_lse = reference_attention(q, k, v, causal)
    where = f"shape {shape}, causal={causal}, blocks {block_m}x{block_n}"
    checks.assert_shape(o, q.shape, f"o ({where})")
    checks.assert_shape(lse, q.shape[:-1], f"lse ({where})")
    checks.assert_close(o, want_o, atol=1e-5, name=f"o ({where})")
    checks.assert_close(lse, want_lse, atol=1e-5, name=f"L, the log-sum-exp ({where})")


check_tiled((2, 3, 17, 17, 16), causal=False, block_m=8, block_n=8)
check_tiled((2, 3, 40, 40, 16), causal=True, block_m=16, block_n=8)
check_tiled((1, 2, 9, 33, 32), causal=True, block_m=4, block_n=16)  # T_q < T_k: a KV cache
### BEGIN HIDDEN TESTS
check_tiled((3, 2, 100, 100, 16), causal=True, block_m=32, block_n=32, seed=1)
check_tiled((2, 1, 5, 71, 32), causal=False, block_m=2, block_n=7, seed=2)
check_tiled((1, 3, 30, 47, 16), causal=True, block_m=7, block_n=5, seed=3)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 5 · the FlashAttention forward kernel
#
# Now the same loop as one Triton program per (query tile, batch × head): the launch grid
# is `(cdiv(T_q, BLOCK_M), B * H)`. The launcher is the library's
# (`attention.flash_attention_forward(q, k, v, causal, kernel=flash_forward_kernel)`); it
# passes every tensor's four strides, so q, k, v may be views of the GPT's packed qkv,
# and `D` padded up to `BLOCK_D`, a power of two. Element (b, h, t, d) of q is at
# `q_ptr + b*stride_qb + h*stride_qh + t*stride_qt + d*stride_qd`.
#
# In the program: load the (BLOCK_M, BLOCK_D) tile of q (masked: rows past T_q, columns
# past D load 0); loop `for start_n in range(0, end, BLOCK_N)` over key tiles, loading k
# and v tiles the same way; the scores are `dot(q, tl.trans(k), DOT_FP32) * scale`; hide
# keys past T_k (the last tile's padding) and, with `CAUSAL`, keys after the query's
# position, with `tl.where(visible, scores, -float("inf"))`; update the running max, sum
# and output as in exercise 4. Store o (masked) and L into `lse_ptr + bh * T_q + rows`.
# With `CAUSAL`, stop the loop at `end = min(T_k, start_m + BLOCK_M + T_k - T_q)`: later
# keys are invisible to every row of the tile, but the tile on the diagonal is needed.
#
# `dot` below multiplies two tiles, accumulating in float32 (in full float32 precision
# when `DOT_FP32`, which the launcher sets for float32 inputs). `if CAUSAL:` on a
# `tl.constexpr` is decided when the kernel compiles: a causal and a non-causal kernel.

# %%
@triton.jit
def dot(a, b, DOT_FP32: tl.constexpr):
    """a @ b for two tiles, in float32: "ieee" keeps a GPU from rounding float32 to TF32."""
    if DOT_FP32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b)


# %% nbgrader={"grade": false, "grade_id": "flash_forward_kernel", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def flash_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    H, T_q, T_k, D, scale,
    CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """o and lse for one tile of BLOCK_M queries of one (batch, head), program_id (tile, bh)."""
    ### BEGIN SOLUTION
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    q_ptr += b * stride_qb + h * stride_qh  # this batch and head
    k_ptr += b * stride_kb + h * stride_kh
    v_ptr += b * stride_vb + h * stride_vh
    o_ptr += b * stride_ob + h * stride_oh
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    q_inside = (rows[:, None] < T_q) & (dims[None, :] < D)
    q = tl.load(q_ptr + rows[:, None] * stride_qt + dims[None, :] * stride_qd, mask=q_inside, other=0.0)
    row_max = tl.full([BLOCK_M], -float("inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    end = T_k
    if CAUSAL:
        end = tl.minimum(T_k, start_m + BLOCK_M + T_k - T_q)
    for start_n in range(0, end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kv_inside = (cols[:, None] < T_k) & (dims[None, :] < D)
        k = tl.load(k_ptr + cols[:, None] * stride_kt + dims[None, :] * stride_kd, mask=kv_inside, other=0.0)
        v = tl.load(v_ptr + cols[:, None] * stride_vt + dims[None, :] * stride_vd, mask=kv_inside, other=0.0)
        scores = dot(q, tl.trans(k), DOT_FP32) * scale  # (BLOCK_M, BLOCK_N)
        visible = cols[None, :] < T_k
        if CAUSAL:
            visible = visible & (cols[None, :] <= rows[:, None] + T_k - T_q)
        scores = tl.where(visible, scores, -float("inf"))
        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        rescale = tl.exp(row_max - new_max)
        p = tl.exp(scores - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None] + dot(p.to(v.dtype), v, DOT_FP32)
        row_max = new_max
    o = (acc / row_sum[:, None]).to(o_ptr.dtype.element_ty)
    tl.store(o_ptr + rows[:, None] * stride_ot + dims[None, :] * stride_od, o, mask=q_inside)
    tl.store(lse_ptr + bh * T_q + rows, row_max + tl.log(row_sum), mask=rows < T_q)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_flash_forward_kernel", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""flash_forward_kernel: o and L, causal or not, ragged T, T_q < T_k, strided inputs, fp16."""
result = run_isolated(forward_case, flash_forward_kernel, B=2, H=3, T_q=17, T_k=17, D=16,
                      causal=False)
assert result.strays["o"] == 0 and result.strays["lse"] == 0, (
    f"values were written outside o or L ({result.strays}): mask every tl.store"
)
assert result.unwritten["o"] == 0, (
    f"{result.unwritten['o']} element(s) of o are NaN: a row that saw no key (0 / 0), or a tile "
    "never written"
)
result.check(atol=1e-4)
run_isolated(forward_case, flash_forward_kernel, B=1, H=2, T_q=40, T_k=40, D=32).check(atol=1e-4)
run_isolated(forward_case, flash_forward_kernel, B=2, H=1, T_q=5, T_k=37, D=16).check(atol=1e-4)
### BEGIN HIDDEN TESTS
run_isolated(forward_case, flash_forward_kernel, B=3, H=2, T_q=100, T_k=100, D=16,
             packed=True, seed=1).check(atol=1e-4)
run_isolated(forward_case, flash_forward_kernel, B=1, H=3, T_q=33, T_k=70, D=64,
             causal=False, seed=2).check(atol=1e-4)
run_isolated(forward_case, flash_forward_kernel, B=2, H=2, T_q=17, T_k=17, D=32,
             dtype=torch.float16, seed=3).check(atol=1e-2, rtol=1e-2)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 6 · the backward: Delta and dQ
#
# The forward kept only o and L. For the backward, any tile of weights is rebuilt exactly
# as P = exp(S - L), with S = q kᵀ · scale. With dP = dO vᵀ, the softmax's backward is
# dS = P ∘ (dP - Δ), where Δ, one number per query row, is Σⱼ Pᵢⱼ dPᵢⱼ, which equals
# rowsum(O ∘ dO): cheap to compute up front. Then dV = Pᵀ dO, dK = scale · dSᵀ Q,
# dQ = scale · dS K. The library's backward runs three kernels, none with atomic adds:
# Δ; then one program per *key* tile for dK and dV; then one per *query* tile for dQ.
#
# Write two of them:
#
# - `flash_preprocess_kernel`: Δ for one tile of BLOCK_M query rows, in float32, stored
#   at `delta_ptr + bh * T_q + rows`;
# - `flash_dq_kernel`: dQ for one tile of queries: load q and dO, L and Δ for its rows;
#   loop over the key tiles it sees (the same `end` as the forward); rebuild P (0 where
#   invisible), dS, and accumulate dS K; store scale · dQ, masked.
#
# The dK/dV kernel is the library's; reading it (`attention.flash_attention_backward_dkdv_kernel`)
# shows the same loop turned around. The test runs all three and compares Δ, dq, dk and dv
# with autograd in float64.

# %% nbgrader={"grade": false, "grade_id": "flash_backward_kernels", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def flash_preprocess_kernel(
    o_ptr, do_ptr, delta_ptr,
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,
    H, T_q, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Delta[i] = sum_d O[i, d] dO[i, d] for one tile of query rows."""
    ### BEGIN SOLUTION
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    o_ptr += b * stride_ob + h * stride_oh
    do_ptr += b * stride_do_b + h * stride_do_h
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    inside = (rows[:, None] < T_q) & (dims[None, :] < D)
    o = tl.load(o_ptr + rows[:, None] * stride_ot + dims[None, :] * stride_od, mask=inside, other=0.0)
    do = tl.load(do_ptr + rows[:, None] * stride_do_t + dims[None, :] * stride_do_d, mask=inside, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(delta_ptr + bh * T_q + rows, delta, mask=rows < T_q)
    ### END SOLUTION


@triton.jit
def flash_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,
    stride_gb, stride_gh, stride_gt, stride_gd,
    H, T_q, T_k, D, scale,
    CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dQ = scale * dS K for one tile of queries, over the key tiles it sees."""
    ### BEGIN SOLUTION
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    q_ptr += b * stride_qb + h * stride_qh
    k_ptr += b * stride_kb + h * stride_kh
    v_ptr += b * stride_vb + h * stride_vh
    do_ptr += b * stride_do_b + h * stride_do_h
    dq_ptr += b * stride_gb + h * stride_gh
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    q_inside = (rows[:, None] < T_q) & (dims[None, :] < D)
    q = tl.load(q_ptr + rows[:, None] * stride_qt + dims[None, :] * stride_qd, mask=q_inside, other=0.0)
    do = tl.load(do_ptr + rows[:, None] * stride_do_t + dims[None, :] * stride_do_d, mask=q_inside, other=0.0)
    lse = tl.load(lse_ptr + bh * T_q + rows, mask=rows < T_q, other=0.0)
    delta = tl.load(delta_ptr + bh * T_q + rows, mask=rows < T_q, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    end = T_k
    if CAUSAL:
        end = tl.minimum(T_k, start_m + BLOCK_M + T_k - T_q)
    for start_n in range(0, end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kv_inside = (cols[:, None] < T_k) & (dims[None, :] < D)
        k = tl.load(k_ptr + cols[:, None] * stride_kt + dims[None, :] * stride_kd, mask=kv_inside, other=0.0)
        v = tl.load(v_ptr + cols[:, None] * stride_vt + dims[None, :] * stride_vd, mask=kv_inside, other=0.0)
        scores = dot(q, tl.trans(k), DOT_FP32) * scale
        visible = (cols[None, :] < T_k) & (rows[:, None] < T_q)
        if CAUSAL:
            visible = visible & (cols[None, :] <= rows[:, None] + T_k - T_q)
        p = tl.where(visible, tl.exp(scores - lse[:, None]), 0.0)
        ds = p * (dot(do, tl.trans(v), DOT_FP32) - delta[:, None])
        dq += dot(ds.to(k.dtype), k, DOT_FP32)
    dq = (dq * scale).to(dq_ptr.dtype.element_ty)
    tl.store(dq_ptr + rows[:, None] * stride_gt + dims[None, :] * stride_gd, dq, mask=q_inside)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_flash_backward_kernels", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""Delta and dQ (with the library's dK/dV): gradients equal to autograd's."""
mine = {"preprocess": flash_preprocess_kernel, "dq": flash_dq_kernel}
result = run_isolated(backward_case, mine, B=2, H=3, T_q=17, T_k=17, D=16, causal=False)
assert all(n == 0 for n in result.strays.values()), (
    f"values were written outside Delta or dq ({result.strays}): mask every tl.store"
)
checks.assert_close(result.got["delta"], result.want["delta"], atol=1e-4,
                    name="Delta = rowsum(O * dO)")
result.check(atol=1e-4)
run_isolated(backward_case, mine, B=1, H=2, T_q=40, T_k=40, D=32).check(atol=1e-4)
### BEGIN HIDDEN TESTS
run_isolated(backward_case, mine, B=2, H=1, T_q=9, T_k=50, D=16, seed=1).check(atol=1e-4)
run_isolated(backward_case, mine, B=1, H=3, T_q=70, T_k=70, D=16, packed=True,
             seed=2).check(atol=1e-4)
run_isolated(backward_case, mine, B=2, H=2, T_q=33, T_k=33, D=32, dtype=torch.float16,
             seed=3).check(atol=2e-2, rtol=2e-2)
### END HIDDEN TESTS

# %% [markdown]
# ## Your kernels inside the GPT
#
# `attention.use_kernels(...)` makes the library run your kernels wherever it launches
# attention, and so inside the GPT with `attn_impl="triton"`. Chapter 05's GPT (yours, if
# you saved it there) on the nano preset: the loss and every gradient should match
# `"sdpa"` to about 1e-5, and greedy generation with the KV cache (a few new queries
# against all the cached keys: T_q < T_k) should write the same tokens.

# %%
GPTClass = learner.load("gpt_torch", "GPT", fallback=GPT)
config = get_preset("nano").model
torch.manual_seed(SEED)
device = kernel_device()  # where Triton kernels run here: "cuda" compiled, "cpu" interpreted
sdpa_model = GPTClass(config).to(device)
triton_model = GPTClass(config.replace(attn_impl="triton")).to(device)
triton_model.load_state_dict(sdpa_model.state_dict())
x = torch.randint(0, config.vocab_size, (GPT_BATCH, config.block_size), device=device)
y = torch.roll(x, -1, dims=1)
mine = dict(forward=flash_forward_kernel, preprocess=flash_preprocess_kernel, dq=flash_dq_kernel)
losses, grads = {}, {}
with attention.use_kernels(**mine):
    for name, model in (("sdpa", sdpa_model), ("triton", triton_model)):
        _, loss = model(x, targets=y)
        loss.backward()
        losses[name] = loss.item()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
    prompt = x[:1, :5]
    tokens = {name: generate(model, prompt, GREEDY_TOKENS, top_k=1)[0].tolist()
              for name, model in (("sdpa", sdpa_model), ("triton", triton_model))}
worst = max((grads["sdpa"][n] - grads["triton"][n]).abs().max().item() for n in grads["sdpa"])
print(f"loss: sdpa {losses['sdpa']:.6f}, your kernels {losses['triton']:.6f}")
print(f"largest gradient difference over {len(grads['sdpa'])} parameters: {worst:.2e}")
print("greedy tokens the same:", tokens["sdpa"] == tokens["triton"])
assert abs(losses["sdpa"] - losses["triton"]) < 1e-4 and worst < 1e-4
assert tokens["sdpa"] == tokens["triton"]

# %% [markdown]
# ## What `torch.compile` writes for you
#
# You wrote a kernel by hand; `torch.compile` writes kernels too. Its backend, Inductor,
# traces a function, fuses the operations it can, and generates code: **C++ with OpenMP**
# (and vector intrinsics) on a CPU, **Triton** on a GPU. The cell below compiles a scaled,
# masked softmax and prints the start of the kernel it generated on this machine. On a
# CPU, look for `#pragma omp parallel` and `Vectorized<float>`: one loop over rows, the
# max, the exponentials and the sum fused into it. On a GPU the same cell prints a
# `@triton.jit` function with `tl.load`, `tl.max` and `tl.store`, much like exercise 2.
#
# Compile plain attention, `softmax(q kᵀ) v`, instead, and Inductor does something else:
# it recognises the pattern and calls the fused attention op itself
# (`_scaled_dot_product_flash_attention_for_cpu`), FlashAttention's algorithm in C++.

# %%
import torch._inductor.config
from torch._inductor.utils import run_and_get_code

# Inductor would first precompile a header of torch's C++ library, a file of ~100 MB, to
# speed up later compiles; one small kernel does not need it (nor does the grader's sandbox,
# which limits the size of a file).
torch._inductor.config.cpp_cache_precompile_headers = False


def scaled_masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, float("-inf")) * 0.125, dim=-1)


device = "cuda" if torch.cuda.is_available() else "cpu"
scores = torch.randn(64, 100, device=device)
mask = torch.rand(64, 100, device=device) > 0.1
start = time.perf_counter()
_, sources = run_and_get_code(torch.compile(scaled_masked_softmax), scores, mask)
print(f"compiled for {device} in {time.perf_counter() - start:.1f} s")
generated = sources[0]
marker = "@triton.jit" if device == "cuda" else "extern \"C\""
start = max(generated.find(marker), 0)
print("\n".join(generated[start:].splitlines()[:40]))

# %% [markdown]
# ## The TensorFlow side: the compiler fuses
#
# Keras has no `@triton.jit`. Its route to a fused kernel is XLA: `tf.function(...,
# jit_compile=True)` hands the traced graph to a compiler that fuses element-wise
# operations and reductions into *fusions*, each one generated kernel. The chapter 06
# attention (`course.tf.manual_attention`), compiled, and XLA's optimized HLO: each
# `fusion` line is one kernel; look at which operations each one took in.

# %%
from course.tf import manual_attention as keras_manual_attention

keras = runtime.import_keras()
q_t, k_t, v_t = attention_inputs(1, 4, 128, 128, 32)
q_tf, k_tf, v_tf = (tf.constant(t.cpu().numpy()) for t in (q_t, k_t, v_t))


def causal_attention_keras(q, k, v):
    return keras_manual_attention(q, k, v)  # chapter 06's, with its causal mask


xla_attention = tf.function(causal_attention_keras, jit_compile=True)
hlo = xla_attention.experimental_get_compiler_ir(q_tf, k_tf, v_tf)(stage="optimized_hlo")
entry = hlo[hlo.find("ENTRY"):]
instructions = [line.strip() for line in entry.splitlines() if " = " in line]
print(f"{len(instructions)} instructions in the entry computation, of which "
      f"{sum('fusion(' in line for line in instructions)} fusions:")
for line in instructions:
    print("  ", line.split(", metadata=")[0][:160])  # without XLA's source-line metadata

# %% [markdown]
# Read the shapes: XLA fused the mask into the scores, the max and the exponentials into
# reductions, the division into the weights, yet the (T, T) matrices between those fusions
# (`f32[1,4,128,128]`) still go through memory, and the two matrix products stay
# separate. That is the difference FlashAttention makes by hand: one kernel from q to o,
# the scores never leaving the chip.

# %% [markdown]
# ### Timed side by side
#
# One call of each on (1, 4, T, 32), causal, float32, the median of a few calls after one
# warm-up (which pays for tracing and compiling). The Triton kernels run in the
# interpreter here, numpy executing every program one after another: their times say how
# slow the interpreter is, not how fast the kernel is. On a GPU the picture is another
# (`benchmarks/attention.py` measures it there).

# %%
def median_ms(fn, *args):
    fn(*args)  # warm-up: traces, compiles
    times = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        out = fn(*args)
        if hasattr(out, "numpy"):  # TensorFlow may return before it has finished
            out.numpy()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


rows = {}
for T in TIMING_T:
    q_t, k_t, v_t = attention_inputs(1, 4, T, T, 32)
    q_tf, k_tf, v_tf = (tf.constant(t.cpu().numpy()) for t in (q_t, k_t, v_t))
    row = {
        "torch manual": median_ms(manual_attention, q_t, k_t, v_t),
        "torch sdpa": median_ms(lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, is_causal=True), q_t, k_t, v_t),
        "keras manual": median_ms(causal_attention_keras, q_tf, k_tf, v_tf),
        "keras.ops.dot_product_attention": median_ms(lambda q, k, v: keras.ops.dot_product_attention(
            *(tf.transpose(t, (0, 2, 1, 3)) for t in (q, k, v)), is_causal=True), q_tf, k_tf, v_tf),
        "XLA (jit_compile)": median_ms(xla_attention, q_tf, k_tf, v_tf),
    }
    if T <= INTERPRETED_T_MAX or not attention.interpreted():
        row["your Triton kernel"] = median_ms(
            lambda q, k, v: attention.flash_attention_forward(
                q, k, v, True, kernel=flash_forward_kernel)[0], q_t, k_t, v_t)
    rows[T] = row
names = list(rows[TIMING_T[0]])
print(f"{'ms per call':<34}" + "".join(f"{f'T={T}':>10}" for T in TIMING_T))
for name in names:
    cells = "".join(f"{rows[T][name]:>10.2f}" if name in rows[T] else f"{'-':>10}" for T in TIMING_T)
    print(f"{name:<34}{cells}")
fig, ax = plt.subplots(figsize=(6, 3.2))
for name in names:
    ts = [T for T in TIMING_T if name in rows[T]]
    ax.plot(ts, [rows[T][name] for T in ts], marker="o", label=name)
ax.set(xlabel="T", ylabel="ms per call (log)", yscale="log", title="attention, one call")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## Exercise 7 · the online softmax in `keras.ops`
#
# The recurrence once more, in the other framework: `tiled_attention_keras(q, k, v,
# causal, block_m, block_n)` does what your exercise 4 did, with `keras.ops` (`ops.matmul`,
# `ops.max`, `ops.exp`, `ops.where`, `ops.concatenate`, slicing) on TensorFlow tensors:
# (o, L), the same shapes, masks and scale. Python loops over tiles are fine here: the
# point is the algorithm, which an XLA-compiled loop would then fuse.

# %% nbgrader={"grade": false, "grade_id": "tiled_attention_keras", "locked": false, "schema_version": 3, "solution": true, "task": false}
def tiled_attention_keras(q, k, v, causal=True, block_m=32, block_n=32):
    """(o, lse) as tiled_attention, in keras.ops."""
    ops = keras.ops
    ### BEGIN SOLUTION
    T_q, T_k, D = q.shape[-2], k.shape[-2], q.shape[-1]
    outputs, lses = [], []
    for start_m in range(0, T_q, block_m):
        stop_m = min(start_m + block_m, T_q)
        q_tile = q[:, :, start_m:stop_m, :]
        row_max = ops.full(ops.shape(q_tile)[:-1], float("-inf"))
        row_sum = ops.zeros_like(row_max)
        acc = ops.zeros_like(q_tile)
        end = min(T_k, stop_m + T_k - T_q) if causal else T_k
        for start_n in range(0, end, block_n):
            stop_n = min(start_n + block_n, T_k)
            scores = ops.matmul(q_tile, ops.swapaxes(k[:, :, start_n:stop_n, :], -1, -2))
            scores = scores / math.sqrt(D)
            if causal:
                rows = ops.arange(start_m, stop_m)[:, None] + T_k - T_q
                scores = ops.where(ops.arange(start_n, stop_n)[None, :] <= rows, scores, -np.inf)
            new_max = ops.maximum(row_max, ops.max(scores, axis=-1))
            rescale = ops.exp(row_max - new_max)
            p = ops.exp(scores - new_max[..., None])
            row_sum = row_sum * rescale + ops.sum(p, axis=-1)
            acc = acc * rescale[..., None] + ops.matmul(p, v[:, :, start_n:stop_n, :])
            row_max = new_max
        outputs.append(acc / row_sum[..., None])
        lses.append(row_max + ops.log(row_sum))
    return ops.concatenate(outputs, axis=-2), ops.concatenate(lses, axis=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_tiled_attention_keras", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""tiled_attention_keras: the same (o, L) as full attention, tile by tile, in keras.ops."""
def check_tiled_keras(shape, causal, block_m, block_n, seed=0):
    q, k, v = attention_inputs(*shape, seed=seed)
    o, lse = tiled_attention_keras(*(tf.constant(t.cpu().numpy()) for t in (q, k, v)),
                                   causal=causal, block_m=block_m, block_n=block_n)
    want_o, want_lse = reference_attention(q, k, v, causal)
    where = f"shape {shape}, causal={causal}, blocks {block_m}x{block_n}"
    checks.assert_close(np.asarray(o), want_o, atol=1e-5, name=f"o ({where})")
    checks.assert_close(np.asarray(lse), want_lse, atol=1e-5, name=f"L ({where})")


check_tiled_keras((2, 3, 17, 17, 16), causal=False, block_m=8, block_n=8)
check_tiled_keras((2, 3, 40, 40, 16), causal=True, block_m=16, block_n=8)
check_tiled_keras((1, 2, 9, 33, 32), causal=True, block_m=4, block_n=16)
### BEGIN HIDDEN TESTS
check_tiled_keras((3, 2, 64, 64, 16), causal=True, block_m=32, block_n=16, seed=1)
check_tiled_keras((2, 1, 5, 71, 32), causal=False, block_m=2, block_n=7, seed=2)
check_tiled_keras((1, 3, 30, 47, 16), causal=True, block_m=7, block_n=5, seed=3)
### END HIDDEN TESTS

# %% [markdown]
# ## What's next
#
# You have written FlashAttention's forward and half of its backward, run them inside a
# GPT, and seen what two compilers do without being asked. Chapter 08 goes back to the
# model and fine-tunes it cheaply with LoRA, in both frameworks.

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. Your online softmax passes when every row's largest value sits in its first block but
#    fails on a rising ramp. Which update did you forget, and why does only the ramp show
#    it?
# 2. The forward kernel keeps L = row_max + log(row_sum) per query instead of the weights P.
#    How much memory does that save for T = 16k, and how does the backward rebuild any tile
#    of P from it exactly?
# 3. With a KV cache, 1 new query attends to T cached keys. Which key tiles does a causal
#    program visit, and what goes wrong if the mask compares key j with query i instead of
#    with i + T_k - T_q?

"""FlashAttention-2 in Triton, forward and backward: chapter 07's main kernel.

Attention as chapter 04 wrote it, softmax(q kᵀ / √D + mask) v, builds the whole (T_q, T_k)
matrix of scores in memory, reads it back for the softmax and again for the product with v.
FlashAttention never stores that matrix. A program takes one tile of queries and walks over
the keys a tile at a time, keeping for each query row a running max of its scores (row_max),
a running sum of their exponentials (row_sum) and a running output (acc): the "online
softmax". When a new key tile raises a row's max from m to m', everything accumulated so far
is rescaled by exp(m - m'), so at the end acc / row_sum is exactly the softmax-weighted sum
of v. All three are kept in float32, whatever the input dtype: they add up many small numbers.

The forward pass also saves one number per query row, the log-sum-exp of its scaled scores,
L = row_max + log(row_sum). The backward pass uses it to rebuild any tile of probabilities exactly,
P = exp(S - L), instead of storing P: memory grows with T, not T². The backward runs in
three kernels, and none of them needs atomic additions:

    1. preprocess  Delta = rowsum(O * dO), one number per query row (dsoftmax needs it);
    2. dK, dV      one program per key tile, looping over the query tiles that see it;
    3. dQ          one program per query tile, looping over the key tiles it sees.

Each program owns the rows it writes, so no two programs add to the same memory.

Shapes follow torch's scaled_dot_product_attention: q (B, H, T_q, D), k and v (B, H, T_k, D),
scale 1/√D. The queries are the *last* T_q of the T_k positions, so a KV cache works: with
`causal`, query i may see key j when j <= i + (T_k - T_q). Any T (masked loads fill the last
tile), head sizes D from 16 to 128 (any integer: the tile is padded to a power of two), and
q, k, v may be views with any strides, such as the slices of the GPT's packed qkv: the
strides are passed to the kernels, nothing is copied. float32, float16 and bfloat16; dropout
and an arbitrary attention mask are not supported.

    flash_attention_forward_kernel, flash_attention_backward_*_kernel   the `@triton.jit` kernels
    flash_attention_forward, flash_attention_backward                   their launchers
    _FlashAttention                                                     the autograd wrapper
    flash_attention(q, k, v, causal=True)                               what the GPT calls
    use_kernels(forward=..., dq=...)                                    run other kernels

Importing this module is using Triton: it gets Triton from `course.runtime.use_triton`, the
course's one place that decides whether kernels run compiled (on a GPU) or in Triton's
interpreter (on the CPU, with TRITON_INTERPRET=1), before the kernels below are defined.
Reach it as `course.runtime.import_kernels("attention")`, as `attn_impl="triton"` does.
"""

import contextlib
import math

import torch

from course import runtime

triton = runtime.use_triton()
tl = triton.language

# Tile sizes: 32 queries by 32 keys. tl.dot needs at least 16 in every dimension; the
# interpreter runs much slower with smaller tiles, and a GPU keeps a 32 x 128 tile of q, k, v
# and the running output in registers and shared memory comfortably.
BLOCK_M = 32  # query rows per program
BLOCK_N = 32  # key rows per step of a program's loop

# tl.dot multiplies tiles of at least 16 along the shared dimension, so D >= 16; above 128
# the tiles of a program no longer fit in a GPU's fast memory.
MIN_HEAD_SIZE, MAX_HEAD_SIZE = 16, 128

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------
# Small helpers the kernels share (they are inlined into each kernel)
# --------------------------------------------------------------------------------------


@triton.jit
def _load_tile(base, rows, cols, stride_row, stride_col, n_rows, n_cols, DOT_FP32: tl.constexpr):
    """The (len(rows), len(cols)) tile base[rows, cols], with zeros outside n_rows x n_cols."""
    inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    pointers = base + rows[:, None] * stride_row + cols[None, :] * stride_col
    tile = tl.load(pointers, mask=inside, other=0.0)
    if DOT_FP32:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _store_tile(base, tile, rows, cols, stride_row, stride_col, n_rows, n_cols):
    inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    pointers = base + rows[:, None] * stride_row + cols[None, :] * stride_col
    tl.store(pointers, tile.to(base.dtype.element_ty), mask=inside)


@triton.jit
def _dot(a, b, DOT_FP32: tl.constexpr):
    """a @ b, accumulated in float32. With float32 tiles, "ieee" keeps a GPU from rounding
    them to TensorFloat-32 (10-bit mantissas), which would leave float32 results agreeing
    with torch's to only about 1e-3."""
    if DOT_FP32:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _visible(rows, cols, T_q, T_k, CAUSAL: tl.constexpr):
    """Bool, broadcastable to (len(rows), len(cols)): query `rows[i]` may see key `cols[j]`.

    Keys past T_k do not exist. With CAUSAL, query i sits at position i + (T_k - T_q) and
    sees keys up to there. Rows past T_q (the last tile's padding) are left to see keys like
    real rows: every row then sees key 0, so no row's max is -inf (-inf - -inf is NaN), and
    what these rows compute is never stored.
    """
    seen = cols[None, :] < T_k  # (1, len(cols))
    if CAUSAL:
        seen = seen & (cols[None, :] <= rows[:, None] + (T_k - T_q))
    return seen


# --------------------------------------------------------------------------------------
# Forward: one program per (query tile, batch x head)
# --------------------------------------------------------------------------------------


@triton.jit
def flash_attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,  # lse: contiguous (B, H, T_q) float32
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    H, T_q, T_k, D, scale,
    CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """o = softmax(q kᵀ * scale) v and lse for one tile of queries, over the key tiles it sees."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)  # offsets below may not fit in 32 bits
    b, h = bh // H, bh % H
    q_ptr += b * stride_qb + h * stride_qh
    k_ptr += b * stride_kb + h * stride_kh
    v_ptr += b * stride_vb + h * stride_vh
    o_ptr += b * stride_ob + h * stride_oh

    rows = start_m + tl.arange(0, BLOCK_M)  # this program's queries
    dims = tl.arange(0, BLOCK_D)
    q = _load_tile(q_ptr, rows, dims, stride_qt, stride_qd, T_q, D, DOT_FP32)  # (BLOCK_M, BLOCK_D)

    row_max = tl.full([BLOCK_M], -float("inf"), dtype=tl.float32)  # running max per row
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp(score - row_max)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running sum of exp(...) * v

    # Causal: keys past the last query of this tile are invisible to all of it; skip them.
    end = T_k
    if CAUSAL:
        end = tl.minimum(T_k, start_m + BLOCK_M + (T_k - T_q))
    # Every row sees key 0, in the first step: row_max is finite from then on, so
    # row_max - new_max below is never -inf - (-inf) = NaN.
    for start_n in range(0, end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k_t = _load_tile(k_ptr, dims, cols, stride_kd, stride_kt, D, T_k, DOT_FP32)  # (D, N)
        v = _load_tile(v_ptr, cols, dims, stride_vt, stride_vd, T_k, D, DOT_FP32)  # (N, D)
        scores = _dot(q, k_t, DOT_FP32) * scale  # (BLOCK_M, BLOCK_N)
        scores = tl.where(_visible(rows, cols, T_q, T_k, CAUSAL), scores, -float("inf"))

        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        rescale = tl.exp(row_max - new_max)  # what was summed so far shrinks by this much
        p = tl.exp(scores - new_max[:, None])  # (BLOCK_M, BLOCK_N), 0 where invisible
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None] + _dot(p.to(v.dtype), v, DOT_FP32)
        row_max = new_max

    _store_tile(o_ptr, acc / row_sum[:, None], rows, dims, stride_ot, stride_od, T_q, D)
    tl.store(lse_ptr + bh * T_q + rows, row_max + tl.log(row_sum), mask=rows < T_q)


# --------------------------------------------------------------------------------------
# Backward, in three kernels
# --------------------------------------------------------------------------------------


@triton.jit
def flash_attention_backward_preprocess_kernel(
    o_ptr, do_ptr, delta_ptr,  # delta: contiguous (B, H, T_q) float32
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,
    H, T_q, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Delta[i] = sum_d O[i, d] dO[i, d], which equals sum_j P[i, j] dP[i, j]: the term the
    softmax's backward subtracts, dS = P * (dP - Delta), computed once per row up front."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    o_ptr += b * stride_ob + h * stride_oh
    do_ptr += b * stride_do_b + h * stride_do_h
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    o = _load_tile(o_ptr, rows, dims, stride_ot, stride_od, T_q, D, True)  # float32
    do = _load_tile(do_ptr, rows, dims, stride_do_t, stride_do_d, T_q, D, True)
    tl.store(delta_ptr + bh * T_q + rows, tl.sum(o * do, axis=1), mask=rows < T_q)


@triton.jit
def flash_attention_backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,
    stride_gb, stride_gh, stride_gt, stride_gd,  # dk, dv: contiguous, k's shape
    H, T_q, T_k, D, scale,
    CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dV = Pᵀ dO and dK = scale * dSᵀ Q for one tile of keys, summed over query tiles."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    q_ptr += b * stride_qb + h * stride_qh
    k_ptr += b * stride_kb + h * stride_kh
    v_ptr += b * stride_vb + h * stride_vh
    do_ptr += b * stride_do_b + h * stride_do_h
    dk_ptr += b * stride_gb + h * stride_gh
    dv_ptr += b * stride_gb + h * stride_gh
    lse_ptr += bh * T_q
    delta_ptr += bh * T_q

    cols = start_n + tl.arange(0, BLOCK_N)  # this program's keys
    dims = tl.arange(0, BLOCK_D)
    k_t = _load_tile(k_ptr, dims, cols, stride_kd, stride_kt, D, T_k, DOT_FP32)  # (D, BLOCK_N)
    v_t = _load_tile(v_ptr, dims, cols, stride_vd, stride_vt, D, T_k, DOT_FP32)  # (D, BLOCK_N)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # Causal: query i sees key j when i >= j - (T_k - T_q); earlier query tiles see none of
    # this tile's keys.
    begin = 0
    if CAUSAL:
        begin = (tl.maximum(0, start_n - (T_k - T_q)) // BLOCK_M) * BLOCK_M
    for start_m in range(begin, T_q, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        q = _load_tile(q_ptr, rows, dims, stride_qt, stride_qd, T_q, D, DOT_FP32)  # (M, D)
        do = _load_tile(do_ptr, rows, dims, stride_do_t, stride_do_d, T_q, D, DOT_FP32)  # (M, D)
        lse = tl.load(lse_ptr + rows, mask=rows < T_q, other=0.0)
        delta = tl.load(delta_ptr + rows, mask=rows < T_q, other=0.0)

        scores = _dot(q, k_t, DOT_FP32) * scale  # (BLOCK_M, BLOCK_N)
        visible = _visible(rows, cols, T_q, T_k, CAUSAL) & (rows[:, None] < T_q)
        p = tl.where(visible, tl.exp(scores - lse[:, None]), 0.0)  # the forward's weights
        dv += _dot(tl.trans(p).to(do.dtype), do, DOT_FP32)
        dp = _dot(do, v_t, DOT_FP32)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])  # softmax's backward, row by row
        dk += _dot(tl.trans(ds).to(q.dtype), q, DOT_FP32)

    _store_tile(dk_ptr, dk * scale, cols, dims, stride_gt, stride_gd, T_k, D)
    _store_tile(dv_ptr, dv, cols, dims, stride_gt, stride_gd, T_k, D)


@triton.jit
def flash_attention_backward_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,
    stride_gb, stride_gh, stride_gt, stride_gd,  # dq: contiguous, q's shape
    H, T_q, T_k, D, scale,
    CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dQ = scale * dS K for one tile of queries, summed over the key tiles it sees."""
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
    q = _load_tile(q_ptr, rows, dims, stride_qt, stride_qd, T_q, D, DOT_FP32)  # (BLOCK_M, BLOCK_D)
    do = _load_tile(do_ptr, rows, dims, stride_do_t, stride_do_d, T_q, D, DOT_FP32)
    lse = tl.load(lse_ptr + bh * T_q + rows, mask=rows < T_q, other=0.0)
    delta = tl.load(delta_ptr + bh * T_q + rows, mask=rows < T_q, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    end = T_k
    if CAUSAL:
        end = tl.minimum(T_k, start_m + BLOCK_M + (T_k - T_q))
    for start_n in range(0, end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_ptr, cols, dims, stride_kt, stride_kd, T_k, D, DOT_FP32)  # (N, D)
        v_t = _load_tile(v_ptr, dims, cols, stride_vd, stride_vt, D, T_k, DOT_FP32)  # (D, N)
        scores = _dot(q, tl.trans(k), DOT_FP32) * scale
        visible = _visible(rows, cols, T_q, T_k, CAUSAL) & (rows[:, None] < T_q)
        p = tl.where(visible, tl.exp(scores - lse[:, None]), 0.0)
        ds = p * (_dot(do, v_t, DOT_FP32) - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, DOT_FP32)

    _store_tile(dq_ptr, dq * scale, rows, dims, stride_gt, stride_gd, T_q, D)


# --------------------------------------------------------------------------------------
# Launchers, autograd wrapper, and the function the GPT calls
# --------------------------------------------------------------------------------------


def _dot_fp32(dtype: torch.dtype) -> bool:
    """Whether the tiles are multiplied in float32: always for float32 input, and for
    bfloat16 in the interpreter, whose tl.dot on bfloat16 gives wrong numbers."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreted())


def interpreted() -> bool:
    """Whether these kernels run in Triton's interpreter (on the CPU) rather than compiled."""
    return not isinstance(flash_attention_forward_kernel, triton.runtime.jit.JITFunction)


def _strides(x: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(x.stride())


# The kernels the launchers run, by role. `use_kernels` swaps in others with the same
# signatures (a learner's, in chapter 07) for the launchers, `flash_attention` and the GPT.
DEFAULT_KERNELS = {
    "forward": flash_attention_forward_kernel,
    "preprocess": flash_attention_backward_preprocess_kernel,
    "dkdv": flash_attention_backward_dkdv_kernel,
    "dq": flash_attention_backward_dq_kernel,
}
_active_kernels = dict(DEFAULT_KERNELS)


@contextlib.contextmanager
def use_kernels(**kernels):
    """Within the `with` block, run the given kernels instead of the library's, by role:
    ``forward``, ``preprocess``, ``dkdv``, ``dq`` (each with the signature of the library's
    kernel of that role). Everything that launches them follows: `flash_attention`, and so
    the GPT with ``attn_impl="triton"``."""
    unknown = set(kernels) - set(DEFAULT_KERNELS)
    if unknown:
        raise ValueError(
            f"unknown kernel role(s) {sorted(unknown)}; the roles are {list(DEFAULT_KERNELS)}"
        )
    saved = dict(_active_kernels)
    _active_kernels.update({role: k for role, k in kernels.items() if k is not None})
    try:
        yield
    finally:
        _active_kernels.clear()
        _active_kernels.update(saved)


def _output(out, name: str, shape, dtype, device) -> torch.Tensor:
    """`out` checked against what the kernel will write, or a new tensor for it."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out {name} must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(
            f"out {name} must be {tuple(shape)} {dtype} on {device}, got "
            f"{tuple(out.shape)} {out.dtype} on {out.device}"
        )
    return out


def flash_attention_forward(q, k, v, causal: bool = True, *, kernel=None, out=None):
    """Run the forward kernel: (o, lse), o (B, H, T_q, D) in q's dtype, lse (B, H, T_q) float32.

    lse[b, h, i] = logsumexp_j(q_i · k_j / √D) over the keys query i sees. No autograd:
    `flash_attention` is the differentiable version. `kernel`: one with the signature of
    `flash_attention_forward_kernel` to run instead. `out`: (o, lse) to write into (any
    strides), rather than new tensors.
    """
    B, H, T_q, T_k, D = _check(q, k, v, causal)
    if out is not None and (not isinstance(out, (tuple, list)) or len(out) != 2):
        raise TypeError("out must be a pair (o, lse) of tensors to write into")
    o_out, lse_out = out if out is not None else (None, None)
    o = _output(o_out, "o", (B, H, T_q, D), q.dtype, q.device)
    lse = _output(lse_out, "lse", (B, H, T_q), torch.float32, q.device)
    if not lse.is_contiguous():
        raise ValueError("out lse must be contiguous: the kernel writes row b*H*T_q + h*T_q + i")
    (kernel or _active_kernels["forward"])[(triton.cdiv(T_q, BLOCK_M), B * H)](
        q, k, v, o, lse,
        *_strides(q), *_strides(k), *_strides(v), *_strides(o),
        H, T_q, T_k, D, 1.0 / math.sqrt(D),
        CAUSAL=causal, DOT_FP32=_dot_fp32(q.dtype),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=triton.next_power_of_2(D),
    )  # fmt: skip
    return o, lse


def flash_attention_backward(do, q, k, v, o, lse, causal: bool = True, *, kernels=None, out=None):
    """Run the three backward kernels: (dq, dk, dv), in their inputs' dtypes.

    `o` and `lse` are what `flash_attention_forward` returned for q, k, v; `do` is the
    gradient of the loss with respect to o (any strides). `kernels`: {role: kernel} to run
    instead of the library's ("preprocess", "dkdv", "dq"). `out`: {name: tensor} for any of
    "delta" (B, H, T_q) float32 contiguous, "dq", "dk", "dv" to write into (any strides).
    """
    B, H, T_q, T_k, D = _check(q, k, v, causal)
    if do.shape != o.shape or o.shape != q.shape or lse.shape != (B, H, T_q):
        raise ValueError(
            f"do {tuple(do.shape)} and o {tuple(o.shape)} must have q's shape {tuple(q.shape)}, "
            f"and lse {tuple(lse.shape)} must be {(B, H, T_q)}"
        )
    if not lse.is_contiguous() or lse.dtype != torch.float32:
        raise ValueError(
            "lse must be float32 and contiguous, as flash_attention_forward returns it: the "
            f"kernels read row b*H*T_q + h*T_q + i (got {lse.dtype}, strides {lse.stride()})"
        )
    roles = ("preprocess", "dkdv", "dq")
    unknown = sorted(set(kernels or {}) - set(roles))
    if unknown or any(k is None for k in (kernels or {}).values()):
        raise ValueError(f"kernels maps roles {list(roles)} to kernels; got {kernels!r}")
    run = {**_active_kernels, **(kernels or {})}
    out = out or {}
    unknown = set(out) - {"delta", "dq", "dk", "dv"}
    if unknown:
        raise ValueError(f"unknown output(s) {sorted(unknown)}: out may hold delta, dq, dk, dv")
    block_d, dot_fp32, scale = triton.next_power_of_2(D), _dot_fp32(q.dtype), 1.0 / math.sqrt(D)
    delta = _output(out.get("delta"), "delta", (B, H, T_q), torch.float32, q.device)
    if not delta.is_contiguous():
        raise ValueError("out delta must be contiguous, like lse")
    run["preprocess"][(triton.cdiv(T_q, BLOCK_M), B * H)](
        o, do, delta, *_strides(o), *_strides(do), H, T_q, D, BLOCK_M=BLOCK_M, BLOCK_D=block_d
    )
    dq = _output(out.get("dq"), "dq", (B, H, T_q, D), q.dtype, q.device)
    dk = _output(out.get("dk"), "dk", (B, H, T_k, D), k.dtype, q.device)
    dv = _output(out.get("dv"), "dv", (B, H, T_k, D), v.dtype, q.device)
    if dk.stride() != dv.stride():
        raise ValueError("out dk and dv must have the same strides: one kernel writes both")
    common = dict(
        CAUSAL=causal, DOT_FP32=dot_fp32, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=block_d
    )
    inputs = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))
    run["dkdv"][(triton.cdiv(T_k, BLOCK_N), B * H)](
        q, k, v, do, lse, delta, dk, dv, *inputs, *_strides(dk), H, T_q, T_k, D, scale, **common
    )
    run["dq"][(triton.cdiv(T_q, BLOCK_M), B * H)](
        q, k, v, do, lse, delta, dq, *inputs, *_strides(dq), H, T_q, T_k, D, scale, **common
    )
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    """Saves q, k, v, o and the log-sum-exp L (not the T_q x T_k weights) for the backward."""

    @staticmethod
    def forward(ctx, q, k, v, causal):
        o, lse = flash_attention_forward(q, k, v, causal)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal = causal
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(do, q, k, v, o, lse, ctx.causal)
        return dq, dk, dv, None


def flash_attention(q, k, v, causal: bool = True) -> torch.Tensor:
    """softmax(q kᵀ / √D + mask) v without the (T_q, T_k) matrix, differentiable.

    The same result as ``F.scaled_dot_product_attention(q, k, v, is_causal=causal)`` when
    T_q == T_k. q is (B, H, T_q, D), k and v (B, H, T_k, D) with T_q <= T_k; with `causal`,
    the queries are the last T_q positions (query i sees keys 0 .. i + T_k - T_q), as with a
    KV cache. D from 16 to 128; float32, float16 or bfloat16. Returns (B, H, T_q, D), new and
    contiguous. Anything else raises a TypeError or ValueError that names the limit.
    """
    _check(q, k, v, causal)
    return _FlashAttention.apply(q, k, v, causal)


def _check(q, k, v, causal) -> tuple[int, int, int, int, int]:
    """Raise the error a learner can act on, or return (B, H, T_q, T_k, D)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D (B, H, T, D) like scaled_dot_product_attention's, "
                f"got shape {tuple(x.shape)}"
            )
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {causal!r}")
    if q.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(dtype).removeprefix("torch.") for dtype in SUPPORTED_DTYPES)
        raise TypeError(f"q.dtype is {q.dtype}; flash_attention supports {names}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not interpreted() and q.device.type != "cuda":
        raise ValueError(
            f"q, k, v are on {q.device}, but the Triton kernels here are compiled for the GPU: "
            "move them to 'cuda' (TRITON_INTERPRET=1 runs them on the CPU instead)"
        )
    B, H, T_q, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H):
        raise ValueError(
            f"q, k, v must have the same batch and heads (B, H) = {(B, H)}, got k "
            f"{tuple(k.shape)} and v {tuple(v.shape)}"
        )
    if k.shape[3] != D or v.shape[3] != D:
        raise ValueError(
            f"q, k, v must have the same head size D = {D} (their last dimension), got k "
            f"{tuple(k.shape)} and v {tuple(v.shape)}"
        )
    T_k = k.shape[2]
    if v.shape[2] != T_k:
        raise ValueError(f"k and v must have as many keys as values, got {T_k} and {v.shape[2]}")
    if not MIN_HEAD_SIZE <= D <= MAX_HEAD_SIZE:
        raise ValueError(
            f"head size D = {D} is outside the {MIN_HEAD_SIZE}..{MAX_HEAD_SIZE} this kernel "
            f"supports (tl.dot needs tiles of at least {MIN_HEAD_SIZE}; above "
            f"{MAX_HEAD_SIZE} a program's tiles outgrow a GPU's fast memory)"
        )
    if min(B, H, T_q) == 0:
        raise ValueError(f"q is empty (shape {tuple(q.shape)}); nothing to attend from")
    if T_k == 0:
        raise ValueError(f"k and v have no keys (shape {tuple(k.shape)}); nothing to attend to")
    if T_q > T_k:
        raise ValueError(
            f"T_q = {T_q} queries but T_k = {T_k} keys: the queries are the last T_q of the "
            "T_k positions, so T_q must be <= T_k"
        )
    return B, H, T_q, T_k, D

"""Row-wise softmax in Triton: a fused kernel for rows that fit in one block, and an online
one for rows of any length.

`torch.softmax` on a GPU reads each row from memory, finds its max, reads it again to sum the
exponentials, and again to divide. Written as one kernel, a row is loaded once into one
program's fast memory, and everything else happens there: that is what "fused" means, and
why it is faster whenever memory, not arithmetic, is the bottleneck (it is, for softmax).

    softmax_kernel          the `@triton.jit` function: one program per row, the row in one block
    softmax_forward(x)      its launcher: checks the input, picks the block, one program per row
    _Softmax, softmax(x)    the autograd wrapper (the backward is a few torch operations)
    online_softmax_kernel   one program per row too, walking the row a block at a time
    online_softmax(x)       its launcher (no autograd: it is the forward of flash attention in
                            miniature, and chapter 07 uses it to teach that)

The online softmax reads a row twice instead of once, but needs only one block of it in fast
memory at a time: pass 1 keeps a running max m and a running sum s of exp(x - m), and when a
block raises the max from m to m', the sum so far is rescaled by exp(m - m'); pass 2 writes
exp(x - m) / s. The same rescaling, applied to a running output too, is FlashAttention.

Numerical stability: softmax(x) = softmax(x - c) for any constant c, and with c = max(x)
every exponent is <= 0, so exp never overflows, even in float16. A row whose entries are
all -inf has no softmax (0 / 0): the result is NaN, as with torch.softmax.

Importing this module is using Triton: it gets Triton from `course.runtime.use_triton`, the
course's one place that decides whether kernels run compiled (on a GPU) or in Triton's
interpreter (on the CPU, with TRITON_INTERPRET=1), before the kernel below is defined. Reach
it as `course.runtime.import_kernels("softmax")`, which also checks this is Twin GPT's
`kernels` package.
"""

import torch

from course import runtime

triton = runtime.use_triton()
tl = triton.language

# One program holds a whole row in its registers and shared memory. 2**16 floats covers GPT-2's
# vocabulary of 50,257 logits; longer rows need a kernel that loops over pieces of a row
# (`online_softmax_kernel`), which this one deliberately is not.
MAX_ROW_LENGTH = 2**16

# The online kernel's block: any row longer than this takes several steps of its loop.
ONLINE_BLOCK = 64

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def softmax_kernel(
    x_ptr, y_ptr, n_cols, x_row_stride, x_col_stride, y_row_stride, BLOCK: tl.constexpr
):
    """y[row] = softmax(x[row]) for the row this program is given (program_id(0)).

    BLOCK is the row length rounded up to a power of two (tl.arange needs one); the lanes past
    the row's end load -inf, which adds exp(-inf) = 0 to the sum and cannot be the max.
    """
    row = tl.program_id(0).to(tl.int64)  # row * stride may not fit in 32 bits
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols * x_col_stride, mask=inside, other=-float("inf"))
    x = x.to(tl.float32)  # float16 / bfloat16 rows are summed in float32
    shifted = x - tl.max(x, axis=0)  # every exponent <= 0: exp cannot overflow
    numerator = tl.exp(shifted)
    y = numerator / tl.sum(numerator, axis=0)
    tl.store(y_ptr + row * y_row_stride + cols, y.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def online_softmax_kernel(
    x_ptr, y_ptr, n_cols, x_row_stride, x_col_stride, y_row_stride, BLOCK: tl.constexpr
):
    """y[row] = softmax(x[row]) for a row of any length, BLOCK entries at a time.

    Pass 1 keeps the running max and the running sum of exp(x - max); pass 2 writes the
    probabilities. Lanes past the row's end load -inf, as in `softmax_kernel`.
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    row_max = tl.full([], -float("inf"), tl.float32)
    row_sum = tl.zeros([], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols * x_col_stride, mask=cols < n_cols, other=-float("inf"))
        x = x.to(tl.float32)
        new_max = tl.maximum(row_max, tl.max(x, axis=0))
        # While every entry so far is -inf, subtract 0 instead: exp(-inf - -inf) would be NaN.
        shift = tl.where(new_max == -float("inf"), 0.0, new_max)
        row_sum = row_sum * tl.exp(row_max - shift) + tl.sum(tl.exp(x - shift), axis=0)
        row_max = new_max
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inside = cols < n_cols
        x = tl.load(x_row + cols * x_col_stride, mask=inside, other=-float("inf"))
        y = tl.exp(x.to(tl.float32) - row_max) / row_sum
        tl.store(y_ptr + row * y_row_stride + cols, y.to(y_ptr.dtype.element_ty), mask=inside)


def _num_warps(block: int) -> int:
    """More threads for longer rows on a GPU (the interpreter ignores this)."""
    return 4 if block < 2048 else 8 if block < 8192 else 16


def softmax_forward(x: torch.Tensor, *, kernel=None, out=None) -> torch.Tensor:
    """softmax over the last dimension of `x`, computed by `softmax_kernel` (or `kernel`, one
    with its signature, such as a learner's); no autograd.

    Any number of dimensions >= 1: the leading ones are flattened into rows (a view where the
    strides allow it, else a copy, as `Tensor.reshape` does). The kernel reads a row through
    its strides, so a transposed 2-D input is not copied. Returns a new contiguous tensor of
    x's shape and dtype, or `out` (contiguous, x's shape and dtype) written in place.
    """
    _check(x)
    block = triton.next_power_of_2(x.shape[-1])
    return _launch(kernel or softmax_kernel, x, out, block, num_warps=_num_warps(block))


def online_softmax(x: torch.Tensor, *, kernel=None, out=None, block: int = ONLINE_BLOCK):
    """softmax over the last dimension of `x` by `online_softmax_kernel` (or `kernel`), `block`
    entries at a time: rows of any length. As `softmax_forward` otherwise; no autograd."""
    _check(x, max_row_length=None)
    if not isinstance(block, int) or block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    return _launch(kernel or online_softmax_kernel, x, out, block)


def _launch(kernel, x, out, block: int, **options) -> torch.Tensor:
    n_cols = x.shape[-1]
    rows = x if x.dim() == 2 else x.reshape(-1, n_cols)  # (n_rows, n_cols)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    elif not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(
            f"out must be contiguous with x's shape {tuple(x.shape)} and dtype {x.dtype}, got "
            f"{tuple(out.shape)} {out.dtype}"
        )
    y = out.view(rows.shape)
    kernel[(rows.shape[0],)](
        rows, y, n_cols, rows.stride(0), rows.stride(1), y.stride(0), BLOCK=block, **options
    )
    return out


class _Softmax(torch.autograd.Function):
    """softmax's autograd wrapper. The backward needs only the output y:
    dx = y * (dy - sum(dy * y)) along the row, a few torch operations (not a kernel)."""

    @staticmethod
    def forward(ctx, x):
        y = softmax_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dy, y32 = dy.float(), y.float()
        dx = y32 * (dy - (dy * y32).sum(dim=-1, keepdim=True))
        return dx.to(y.dtype)


def softmax(x: torch.Tensor) -> torch.Tensor:
    """softmax(x) over the last dimension, like `torch.softmax(x, dim=-1)`, with gradients.

    `x`: float32, float16 or bfloat16, at least 1-D, no dimension of size 0, rows of at most
    MAX_ROW_LENGTH entries (any length, not only powers of two). Leading dimensions are
    flattened into rows. Other input raises a TypeError or ValueError that names the limit.
    """
    _check(x)
    return _Softmax.apply(x)


def _check(x, max_row_length: int | None = MAX_ROW_LENGTH) -> None:
    """Raise the error a learner can act on, before the kernel sees a bad input."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(dtype).removeprefix("torch.") for dtype in SUPPORTED_DTYPES)
        raise TypeError(f"x.dtype is {x.dtype}; softmax supports {names}")
    if x.dim() == 0:
        raise ValueError("x is 0-d (a single number); softmax needs at least one dimension")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); softmax needs at least one entry")
    if max_row_length is not None and x.shape[-1] > max_row_length:
        raise ValueError(
            f"x's rows have {x.shape[-1]} entries; this kernel holds a whole row in one program, "
            f"so rows may have at most MAX_ROW_LENGTH = {MAX_ROW_LENGTH}"
        )
    if x.device.type != "cuda" and isinstance(softmax_kernel, triton.runtime.jit.JITFunction):
        raise ValueError(
            f"x is on {x.device}, but the Triton kernels here are compiled for the GPU: move x "
            "to 'cuda' (TRITON_INTERPRET=1 runs them on the CPU instead)"
        )

"""A fused row-wise softmax in Triton: chapter 07's first kernel.

`torch.softmax` on a GPU reads each row from memory, finds its max, reads it again to sum the
exponentials, and again to divide. Written as one kernel, a row is loaded once into one
program's fast memory, and everything else happens there: that is what "fused" means, and
why it is faster whenever memory, not arithmetic, is the bottleneck (it is, for softmax).

    softmax_kernel   the `@triton.jit` function: one program per row
    softmax(x)       the launcher: checks the input, picks the block, starts one program per row
    _Softmax         its autograd wrapper (the backward is a few torch operations)

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
# vocabulary of 50,257 logits; rows much longer need a kernel that loops over pieces of a row
# (the online softmax of kernels/attention.py), which this one deliberately is not.
MAX_ROW_LENGTH = 2**16

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


def _num_warps(block: int) -> int:
    """More threads for longer rows on a GPU (the interpreter ignores this)."""
    return 4 if block < 2048 else 8 if block < 8192 else 16


def softmax_forward(x: torch.Tensor) -> torch.Tensor:
    """softmax over the last dimension of `x`, computed by `softmax_kernel`; no autograd.

    Any number of dimensions >= 1: the leading ones are flattened into rows (a view where the
    strides allow it, else a copy, as `Tensor.reshape` does). The kernel reads a row through
    its strides, so a transposed 2-D input is not copied. Returns a new contiguous tensor of
    x's shape and dtype.
    """
    _check(x)
    n_cols = x.shape[-1]
    rows = x if x.dim() == 2 else x.reshape(-1, n_cols)  # (n_rows, n_cols)
    y = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(n_cols)
    softmax_kernel[(rows.shape[0],)](
        rows,
        y,
        n_cols,
        rows.stride(0),
        rows.stride(1),
        y.stride(0),
        BLOCK=block,
        num_warps=_num_warps(block),
    )
    return y.view(x.shape)


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


def _check(x) -> None:
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
    if x.shape[-1] > MAX_ROW_LENGTH:
        raise ValueError(
            f"x's rows have {x.shape[-1]} entries; this kernel holds a whole row in one program, "
            f"so rows may have at most MAX_ROW_LENGTH = {MAX_ROW_LENGTH}"
        )
    if x.device.type != "cuda" and isinstance(softmax_kernel, triton.runtime.jit.JITFunction):
        raise ValueError(
            f"x is on {x.device}, but the Triton kernels here are compiled for the GPU: move x "
            "to 'cuda' (TRITON_INTERPRET=1 runs them on the CPU instead)"
        )

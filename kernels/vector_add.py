"""out = x + y in Triton: the smallest kernel, and every idea the bigger ones build on.

A launch starts a grid of programs; each program handles one BLOCK of elements, the ones at
``program_id * BLOCK + arange(BLOCK)``. The last block usually runs past the end of the
vectors, so every load and store carries a mask: without it the last program reads and
writes memory that belongs to something else (on a GPU, silently).

    add_kernel     the `@triton.jit` function: one program per BLOCK of elements
    add(x, y)      the launcher: checks the input, starts cdiv(n, BLOCK) programs

Importing this module is using Triton (`course.runtime.use_triton` decides first whether
kernels run compiled or in the interpreter): reach it as
``course.runtime.import_kernels("vector_add")``.
"""

import torch

from course import runtime

triton = runtime.use_triton()
tl = triton.language

BLOCK = 64  # elements per program: small, so a short vector already takes several programs


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out[i] = x[i] + y[i] for the BLOCK elements of this program that exist (i < n)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n  # the last program's block runs past the end
    x = tl.load(x_ptr + offsets, mask=inside)
    y = tl.load(y_ptr + offsets, mask=inside)
    tl.store(out_ptr + offsets, x + y, mask=inside)


def add(x: torch.Tensor, y: torch.Tensor, *, kernel=None, out=None, block: int = BLOCK):
    """x + y for two 1-D tensors of one length, dtype and device, by `kernel` (default
    `add_kernel`, or one with its signature, such as a learner's). `out`: where to write
    (a 1-D tensor like x); default a new one. Returns `out`."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D torch.Tensor, got {_describe(t)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous: the kernel reads element i at i")
    if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device:
        raise ValueError(
            f"x and y must have one length, dtype and device, got {_describe(x)} and {_describe(y)}"
        )
    if out is None:
        out = torch.empty_like(x)
    elif not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"out must be contiguous, like x ({_describe(x)}); got {_describe(out)}")
    n = x.numel()
    (kernel or add_kernel)[(triton.cdiv(n, block),)](x, y, out, n, BLOCK=block)
    return out


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"shape {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"
    return type(t).__name__

"""Testing a Triton kernel that may be wrong: in a child process, inside NaN canaries.

A kernel's mistakes are quiet. A store without its mask writes past the end of its output,
into whatever lies there; a grid one program short leaves the last elements as they were;
in Triton's interpreter an address far outside any tensor can even kill the process. So
chapter 07's graded tests run each kernel

- in a forked child process (`run_isolated`): whatever the kernel does, the notebook's
  kernel survives, and a crash comes back as `KernelCrashed` naming the signal;
- with every output filled with NaN and placed inside a larger NaN buffer (`Canary`): an
  output element still NaN afterwards was never written, and a margin element that is no
  longer NaN was written by a store that should not have happened.

The ``*_case`` functions launch a kernel (a learner's or the library's) through the
library's launcher on random inputs of a given shape and return a `CaseResult` of numpy
arrays, the reference values beside them and the canaries' counts; `CaseResult.check`
turns them into assertions whose messages say what the numbers suggest.

    result = run_isolated(forward_case, my_forward_kernel, B=2, H=3, T_q=17, T_k=17, D=16)
    result.check(atol=1e-4)
"""

from __future__ import annotations

import math
import os
import pickle
import select
import signal
import struct
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from course import runtime

MARGIN = 64  # NaN elements on each side of an output: a stray store lands in them


class KernelCrashed(RuntimeError):
    """The child process running a kernel died (a signal, or exit without an answer)."""


class ChildError(RuntimeError):
    """An exception in the child process that could not be sent back as itself."""


def run_isolated(fn, *args, timeout: float = 120.0, **kwargs):
    """fn(*args, **kwargs) in a forked child process; its (picklable) return value.

    The child starts as a copy of this process (the learner's kernels included) and uses one
    thread. An exception in it is raised here; if it dies or runs past `timeout` seconds,
    `KernelCrashed` says how. Once this process uses CUDA a forked child cannot (CUDA does not
    survive a fork): then `fn` runs here, and a compiled kernel's bad address shows as a CUDA
    error instead of a crash.
    """
    if torch.cuda.is_initialized():
        return fn(*args, **kwargs)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code = 0
        try:
            torch.set_num_threads(1)  # the parent's thread pool did not survive the fork
            try:
                payload = pickle.dumps(("ok", fn(*args, **kwargs)))
            except BaseException as err:  # sent back to be raised there
                payload = _pickled_error(err)
            _write_all(write_end, struct.pack("<Q", len(payload)) + payload)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        data = _read_until_closed(read_end, pid, timeout)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if len(data) < 8 or len(data) != 8 + struct.unpack("<Q", data[:8])[0]:
        raise KernelCrashed(_death(status))
    kind, value = pickle.loads(data[8:])
    if kind == "ok":
        return value
    raise value


def _pickled_error(err: BaseException) -> bytes:
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    try:
        payload = pickle.dumps(("error", err))
        pickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
        return payload
    except Exception:
        return pickle.dumps(("error", ChildError(text)))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_until_closed(fd: int, pid: int, timeout: float) -> bytes:
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise KernelCrashed(
                f"the kernel ran past {timeout:g} s and was stopped: a loop that never ends "
                "(a range whose step is 0, say), or a launch far larger than intended"
            )
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return (
            f"the process running the kernel was killed by {name}: typically a load or store "
            "far outside every tensor (an offset computed from the wrong stride, or no mask)"
        )
    return f"the process running the kernel exited (status {os.waitstatus_to_exitcode(status)})"


class Canary:
    """An output tensor of `shape` filled with NaN, inside a NaN buffer `margin` elements
    larger on each side (contiguous unless `stride_order` permutes its dimensions)."""

    def __init__(self, shape, dtype=torch.float32, margin: int = MARGIN, order=None):
        shape = tuple(shape)
        device = kernel_device()
        order = tuple(range(len(shape))) if order is None else tuple(order)
        n = math.prod(shape)
        self.margin = margin
        self.buffer = torch.full((n + 2 * margin,), float("nan"), dtype=dtype, device=device)
        stored = tuple(shape[d] for d in order)  # memory holds the dimensions in this order
        inverse = [order.index(d) for d in range(len(shape))]
        self.tensor = self.buffer[margin : margin + n].view(stored).permute(*inverse)

    def unwritten(self) -> int:
        """Output elements still NaN: never written (or computed as NaN)."""
        return int(torch.isnan(self.tensor.float()).sum())

    def strays(self) -> int:
        """Margin elements that were written: stores outside the output."""
        m = self.margin
        outside = torch.cat([self.buffer[:m], self.buffer[-m:]]).float()
        return int((~torch.isnan(outside)).sum())


@dataclass
class CaseResult:
    """A kernel's outputs on one case, the reference values and the canaries' counts."""

    case: str
    got: dict[str, np.ndarray]
    want: dict[str, np.ndarray]
    unwritten: dict[str, int] = field(default_factory=dict)
    strays: dict[str, int] = field(default_factory=dict)

    def check(self, atol: float = 1e-4, rtol: float = 1e-4) -> None:
        """Assert: nothing written outside an output, every output element written, and
        every output close to the reference; the messages say what went wrong where."""
        for name, count in self.strays.items():
            assert count == 0, (
                f"{self.case}: {count} element(s) written outside {name}: a tl.store without "
                "its mask, or with a mask that lets rows or columns past the end through"
            )
        for name, count in self.unwritten.items():
            assert count == 0, (
                f"{self.case}: {count} of {self.got[name].size} element(s) of {name} are NaN: "
                "never written (a grid or loop that misses some, a mask too strict) or "
                "computed as NaN (exp of inf - inf, 0 / 0)"
            )
        for name, want in self.want.items():
            got = self.got[name].astype(np.float64)
            err = np.abs(got - want)
            bad = err > atol + rtol * np.abs(want)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise AssertionError(
                    f"{self.case}: {name} differs from the reference at {int(bad.sum())} of "
                    f"{bad.size} element(s); largest difference {float(err.max()):.3g} "
                    f"(allowed {atol:g} + {rtol:g}·|reference|); first at index {where}: "
                    f"got {float(got[where]):.6g}, expected {float(want[where]):.6g}"
                )


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def kernel_device() -> str:
    """Where the kernels' tensors live: "cpu" in Triton's interpreter, else "cuda"."""
    return "cpu" if runtime.import_kernels("attention").interpreted() else "cuda"


def _randn(*shape, dtype=torch.float32, scale=1.0, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)  # the same numbers on every device
    return (torch.randn(*shape, generator=generator) * scale).to(kernel_device(), dtype)


def vector_add_case(kernel, n: int, seed: int = 0) -> CaseResult:
    """`kernel` (add_kernel's signature) on two random vectors of length n."""
    add = runtime.import_kernels("vector_add")
    x, y = _randn(n, seed=seed), _randn(n, seed=seed + 1)
    out = Canary((n,))
    add.add(x, y, kernel=kernel, out=out.tensor)
    return CaseResult(
        f"n={n}", {"out": _numpy(out.tensor)}, {"out": _numpy(x + y)},
        {"out": out.unwritten()}, {"out": out.strays()},
    )  # fmt: skip


def softmax_case(
    kernel, rows: int, cols: int, *, online: bool = False, scale: float = 1.0,
    transposed: bool = False, block: int | None = None, seed: int = 0,
) -> CaseResult:  # fmt: skip
    """`kernel` (softmax_kernel's signature) on random rows, through the fused launcher, or
    the online one (`online`, with `block`). `scale` spreads the logits (large values test
    the max subtraction); `transposed` reads rows through a column-major view."""
    softmax = runtime.import_kernels("softmax")
    if transposed:
        x = _randn(cols, rows, scale=scale, seed=seed).t()  # rows, cols, not contiguous
    else:
        x = _randn(rows, cols, scale=scale, seed=seed)
    out = Canary((rows, cols))
    if online:
        block = block or softmax.ONLINE_BLOCK
        softmax.online_softmax(x, kernel=kernel, out=out.tensor, block=block)
    else:
        softmax.softmax_forward(x, kernel=kernel, out=out.tensor)
    layout = ", transposed" if transposed else ""
    return CaseResult(
        f"{rows} rows of {cols}{layout}, logits x{scale:g}",
        {"y": _numpy(out.tensor)}, {"y": _numpy(torch.softmax(x.double(), dim=-1))},
        {"y": out.unwritten()}, {"y": out.strays()},
    )  # fmt: skip


def attention_inputs(B, H, T_q, T_k, D, *, dtype=torch.float32, packed=False, seed=0):
    """Random q (B, H, T_q, D), k and v (B, H, T_k, D). `packed`: as the GPT makes them, views
    of one (B, T, 3·H·D) tensor (not contiguous; needs T_q == T_k)."""
    if packed:
        if T_q != T_k:
            raise ValueError("packed q, k, v come from one sequence: T_q must equal T_k")
        qkv = _randn(B, T_k, 3 * H * D, dtype=dtype, seed=seed)
        return tuple(t.view(B, T_k, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
    return tuple(
        _randn(B, H, T, D, dtype=dtype, seed=seed + i) for i, T in enumerate((T_q, T_k, T_k))
    )


def reference_attention(q, k, v, causal: bool):
    """(o, lse) in float64: softmax(q kᵀ / √D + mask) v with the queries the last T_q
    positions, and the log-sum-exp of each query's visible scaled scores."""
    q, k, v = q.double(), k.double(), v.double()
    T_q, T_k = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        rows = torch.arange(T_q, device=q.device)[:, None] + (T_k - T_q)
        hidden = torch.arange(T_k, device=q.device)[None, :] > rows
        scores = scores.masked_fill(hidden, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v, torch.logsumexp(scores, dim=-1)


def _describe_attention(B, H, T_q, T_k, D, causal, dtype, packed) -> str:
    words = [f"B={B} H={H} T_q={T_q} T_k={T_k} D={D}", "causal" if causal else "not causal"]
    words += [str(dtype).removeprefix("torch.")] + (["packed (strided) q, k, v"] if packed else [])
    return ", ".join(words)


def forward_case(
    kernel, B: int, H: int, T_q: int, T_k: int, D: int, *, causal: bool = True,
    dtype=torch.float32, packed: bool = False, seed: int = 0,
) -> CaseResult:  # fmt: skip
    """`kernel` (flash_attention_forward_kernel's signature) through the library's launcher:
    o and lse against `reference_attention`."""
    attention = runtime.import_kernels("attention")
    q, k, v = attention_inputs(B, H, T_q, T_k, D, dtype=dtype, packed=packed, seed=seed)
    o, lse = Canary((B, H, T_q, D), dtype), Canary((B, H, T_q))
    attention.flash_attention_forward(q, k, v, causal, kernel=kernel, out=(o.tensor, lse.tensor))
    want_o, want_lse = reference_attention(q, k, v, causal)
    return CaseResult(
        _describe_attention(B, H, T_q, T_k, D, causal, dtype, packed),
        {"o": _numpy(o.tensor), "lse": _numpy(lse.tensor)},
        {"o": _numpy(want_o), "lse": _numpy(want_lse)},
        {"o": o.unwritten(), "lse": lse.unwritten()},
        {"o": o.strays(), "lse": lse.strays()},
    )


def backward_case(
    kernels: dict, B: int, H: int, T_q: int, T_k: int, D: int, *, causal: bool = True,
    dtype=torch.float32, packed: bool = False, seed: int = 0,
) -> CaseResult:  # fmt: skip
    """The backward with `kernels` ({role: kernel} for "preprocess", "dkdv", "dq"; the
    library's for the others) on the library's forward: Delta, dq, dk, dv against float64
    autograd of `reference_attention`, for a random upstream gradient dO."""
    attention = runtime.import_kernels("attention")
    q, k, v = attention_inputs(B, H, T_q, T_k, D, dtype=dtype, packed=packed, seed=seed)
    do = _randn(B, H, T_q, D, dtype=dtype, seed=seed + 7)
    o, lse = attention.flash_attention_forward(q, k, v, causal)
    delta = Canary((B, H, T_q))
    grads = {name: Canary(t.shape, dtype) for name, t in (("dq", q), ("dk", k), ("dv", v))}
    out = {"delta": delta.tensor, **{name: c.tensor for name, c in grads.items()}}
    attention.flash_attention_backward(do, q, k, v, o, lse, causal, kernels=kernels, out=out)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want_o, _ = reference_attention(*leaves, causal)
    want_o.backward(do.double())
    want = {"delta": (o.double() * do.double()).sum(-1)}
    want |= {name: t.grad for name, t in zip(grads, leaves, strict=True)}
    canaries = {"delta": delta, **grads}
    return CaseResult(
        _describe_attention(B, H, T_q, T_k, D, causal, dtype, packed),
        {name: _numpy(c.tensor) for name, c in canaries.items()},
        {name: _numpy(t) for name, t in want.items()},
        {name: c.unwritten() for name, c in canaries.items()},
        {name: c.strays() for name, c in canaries.items()},
    )

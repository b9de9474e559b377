"""Chapter 07's FlashAttention kernels against torch's scaled_dot_product_attention.

One causal attention of shape (B, H, T, D), forward and backward, timed both ways (best of a
few runs after a warm-up), with the largest absolute difference in the output and in each
gradient. Without a GPU the Triton kernels run in Triton's interpreter, one program after
another in Python and numpy: expect them to be hundreds of times slower than torch. That
figure measures the interpreter, not the algorithm; on a GPU the same kernels run compiled.

    .venv/bin/python benchmarks/attention_kernels.py
    .venv/bin/python benchmarks/attention_kernels.py --shape 2 4 256 64 --dtype float16
"""

from __future__ import annotations

import argparse
import time


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 4, 128, 64], metavar="BHTD")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from course import runtime

    attention = runtime.import_kernels("attention")  # Triton first, interpreted without a GPU
    import torch
    import torch.nn.functional as F

    B, H, T, D = args.shape
    dtype = getattr(torch, args.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(0)
    q, k, v, grad_out = (
        torch.randn(B, H, T, D, generator=generator).to(device, dtype) for _ in range(4)
    )

    def forward_backward(attend):
        leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        out = attend(*leaves)
        out.backward(grad_out)
        if device == "cuda":
            torch.cuda.synchronize()
        return [out.detach(), *(x.grad for x in leaves)]

    def sdpa(*qkv):
        return F.scaled_dot_product_attention(*qkv, is_causal=True)

    mine, torchs = forward_backward(attention.flash_attention), forward_backward(sdpa)  # warm-up
    errors = [(a.float() - b.float()).abs().max().item() for a, b in zip(mine, torchs, strict=True)]
    triton_time = best_of(args.repeats, lambda: forward_backward(attention.flash_attention))
    torch_time = best_of(args.repeats, lambda: forward_backward(sdpa))

    mode = "interpreted (CPU)" if attention.interpreted() else f"compiled ({device})"
    print(runtime.versions_line())
    print(f"causal attention, (B, H, T, D) = {(B, H, T, D)}, {args.dtype}, forward + backward")
    print(f"Triton kernels, {mode}: {triton_time * 1e3:10.1f} ms")
    print(f"torch sdpa ({device}):          {torch_time * 1e3:10.1f} ms")
    print(f"ratio Triton / torch: {triton_time / torch_time:.0f}x")
    names = ("o", "dq", "dk", "dv")
    figures = ", ".join(f"{n} {e:.2e}" for n, e in zip(names, errors, strict=True))
    print(f"max abs error vs torch: {figures}")


if __name__ == "__main__":
    main()

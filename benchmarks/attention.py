"""Chapter 07's FlashAttention kernel against torch's SDPA, naive attention and Keras'.

Causal attention of shape (B, H, T, D), timed forward and forward + backward.

On a GPU (CUDA): B 4, H 16, D 64, float16, T from 1k to 16k, timed with
`triton.testing.do_bench` (median): the Triton kernels, `F.scaled_dot_product_attention`
and the naive attention of chapter 04 (`course.torch.model.manual_attention`), which builds
the (T, T) matrix of scores and runs out of memory at long T (its cell then says so). The
target: Triton's forward at least 0.9x as fast as SDPA's at T = 4k on a data-centre GPU,
and running at 16k.

On the CPU: the same Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1), one
program after another in Python and numpy, so only a small shape (B 1, H 4, D 64, float32,
T 128 and 256): that time measures the interpreter, not the algorithm, and no GPU figure is
printed. Beside it, at T up to 2048: torch's SDPA and naive attention, and on the Keras side
the same naive attention in keras.ops (`course.tf.model.manual_attention`), its XLA build
(`tf.function(jit_compile=True)`) and `keras.ops.dot_product_attention`; the median of a few
calls (time.perf_counter) after a warm-up call, which also holds XLA's compilation. Then the
largest absolute difference of each one's output and gradients from torch's SDPA in float32.
Run it on a quiet machine: on cores another job is using, a multi-threaded op waits for its
slowest thread and a call can take many times longer (`--threads 1` suffers less).

FLOPs of the useful work, the same for every implementation: 4·B·H·T²·D for the two
products, halved for the causal mask, and 2.5 times that for the backward, so a forward +
backward counts 3.5 times the forward. Naive attention computes the masked half too, so its
figure is the work that counts, not the work it does.

    .venv/bin/python benchmarks/attention.py
    .venv/bin/python benchmarks/attention.py --quick            # one small T each: smoke check
    .venv/bin/python benchmarks/attention.py --dtype bfloat16 --threads 1
"""

from __future__ import annotations

import argparse
import os
import textwrap
from functools import partial

from course.metrics import median_ms  # standard library only: the import order is kept

GPU_SHAPE = {"B": 4, "H": 16, "D": 64}  # the shape
GPU_T = (1024, 2048, 4096, 8192, 16384)
TARGET_T, TARGET_RATIO = 4096, 0.9  # Triton's forward >= 0.9x SDPA's speed at T = 4k

CPU_SHAPE = {"B": 1, "H": 4, "D": 64}  # small: the interpreter takes ~3 s per call at T = 256
CPU_TRITON_T = (128, 256)
CPU_T = (128, 256, 512, 1024, 2048)
CPU_REPEATS = 5  # timed calls per cell after the warm-up; their median is printed
INTERPRETER_REPEATS = 3

PASSES = ("forward", "fwd+bwd")
KERAS_SDPA = "keras.ops.dot_product_attention"  # takes (B, T, H, D), not (B, H, T, D)
OUT_OF_MEMORY = "out of memory"


def attention_flops(B: int, H: int, T: int, D: int, backward: bool) -> float:
    """Useful FLOPs of causal attention: 4·B·H·T²·D × 0.5 (causal), × 3.5 with the backward."""
    forward = 4 * B * H * T * T * D * 0.5
    return forward * (1 + 2.5) if backward else forward


def print_table(title: str, rows: dict, t_values) -> None:
    """rows {name: {T: ms, a rate or OUT_OF_MEMORY}}: one line per row, one column per T."""
    width = max(len(name) for name in rows)
    print(f"\n{title}")
    print(" " * width + "".join(f"{f'T = {T}':>15}" for T in t_values))
    for name, values in rows.items():
        print(f"{name:<{width}}" + "".join(f"{cell(values.get(T)):>15}" for T in t_values))


def cell(value) -> str:
    """A table cell: a number, OUT_OF_MEMORY as it is, "-" for a cell not measured."""
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:,.2f}"


def rates(rows: dict, shape: dict, unit: float) -> dict:
    """The ms table turned into FLOP rates (FLOPs / unit per second), row by row."""

    def rate(name: str, T: int, ms):
        if isinstance(ms, str):
            return ms
        flops = attention_flops(**shape, T=T, backward=name.endswith("fwd+bwd"))
        return flops / (ms * 1e-3) / unit

    return {
        name: {T: rate(name, T, ms) for T, ms in values.items()} for name, values in rows.items()
    }


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def max_abs(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def print_errors(title: str, results: dict, reference) -> None:
    """results {name: (out, dq, dk, dv)} as numpy arrays, against the reference's four."""
    print(f"\n{title}")
    width = max(len(name) for name in results)
    for name, arrays in results.items():
        out, *grads = (max_abs(a, r) for a, r in zip(arrays, reference, strict=True))
        print(f"{name:<{width}}  output {out:.1e}   gradients (max of dq, dk, dv) {max(grads):.1e}")


# --------------------------------------------------------------------------------------
# PyTorch: the Triton kernels, SDPA and naive attention
# --------------------------------------------------------------------------------------


def torch_implementations(attention, interpreted: bool) -> dict:
    """{row name: attend(q, k, v) -> o}, causal, on (B, H, T, D) tensors."""
    import torch.nn.functional as F

    from course.torch.model import manual_attention

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    triton_name = "Triton, interpreted" if interpreted else "Triton flash_attention"
    return {
        triton_name: attention.flash_attention,
        "torch SDPA": sdpa,
        "torch naive (manual_attention)": manual_attention,
    }


def torch_calls(attend, q, k, v, do):
    """(forward(), forward_backward()) for timing, and run() -> (o, dq, dk, dv) for errors."""
    import torch

    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]

    def forward():
        with torch.no_grad():
            return attend(q, k, v)

    def forward_backward():
        for x in leaves:
            x.grad = None
        attend(*leaves).backward(do)

    def run():
        for x in leaves:
            x.grad = None
        out = attend(*leaves)
        out.backward(do)
        return [out.detach(), *(x.grad for x in leaves)]

    return forward, forward_backward, run, leaves


def to_numpy(x):
    """A torch or TensorFlow tensor as a float32 numpy array."""
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return x.numpy().astype(np.float32)


def reference(q, k, v, do) -> list:
    """torch SDPA in float32 on the same (rounded) inputs: o, dq, dk, dv as numpy arrays."""
    import torch.nn.functional as F

    leaves = [x.detach().float().requires_grad_() for x in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves, is_causal=True)
    out.backward(do.float())
    return [to_numpy(x) for x in (out, *(x.grad for x in leaves))]


def random_inputs(shape: dict, T: int, dtype, device: str, seed: int = 0):
    """q, k, v and the output's gradient do, (B, H, T, D) each, drawn in float32."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    size = (shape["B"], shape["H"], T, shape["D"])
    return [torch.randn(size, generator=generator).to(device, dtype) for _ in range(4)]


# --------------------------------------------------------------------------------------
# On a GPU
# --------------------------------------------------------------------------------------


def gpu_benchmark(attention, dtype, t_values) -> None:
    import torch
    from triton.testing import do_bench

    implementations = torch_implementations(attention, interpreted=False)
    B, H, D, precision = GPU_SHAPE["B"], GPU_SHAPE["H"], GPU_SHAPE["D"], dtype_name(dtype)
    print(f"\ncausal attention on {torch.cuda.get_device_name()}: B {B}, H {H}, D {D}, {precision}")
    print("triton.testing.do_bench, median of its runs; forward under torch.no_grad()")

    rows = {f"{name} {mode}": {} for name in implementations for mode in PASSES}
    for T in t_values:
        q, k, v, do = random_inputs(GPU_SHAPE, T, dtype, "cuda")
        if T == t_values[0]:
            results = {}
            for name, attend in implementations.items():
                results[name] = [to_numpy(x) for x in torch_calls(attend, q, k, v, do)[2]()]
            errors = (
                f"max abs difference from torch SDPA in float32 at T = {T} (inputs in {precision}):"
            )
            print_errors(errors, results, reference(q, k, v, do))
        for name, attend in implementations.items():
            forward, forward_backward, _, leaves = torch_calls(attend, q, k, v, do)
            for mode, fn in zip(PASSES, (forward, forward_backward), strict=True):
                if rows[f"{name} forward"].get(T) == OUT_OF_MEMORY:  # fwd+bwd needs more
                    rows[f"{name} {mode}"][T] = OUT_OF_MEMORY
                    continue
                try:
                    rows[f"{name} {mode}"][T] = do_bench(
                        fn, grad_to_none=leaves, return_mode="median"
                    )
                except torch.cuda.OutOfMemoryError:
                    rows[f"{name} {mode}"][T] = OUT_OF_MEMORY
                torch.cuda.empty_cache()
            del forward, forward_backward, leaves
            torch.cuda.empty_cache()
        del q, k, v, do
        torch.cuda.empty_cache()

    print_table("ms per call", rows, t_values)
    print_table("TFLOPS", rates(rows, GPU_SHAPE, 1e12), t_values)

    triton_name, sdpa_name, naive_name = implementations
    triton_ms, sdpa_ms = (
        rows[f"{triton_name} forward"].get(TARGET_T),
        rows[f"{sdpa_name} forward"].get(TARGET_T),
    )
    print()
    if isinstance(triton_ms, float) and isinstance(sdpa_ms, float):
        ratio = sdpa_ms / triton_ms
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(
            f"forward at T = {TARGET_T}: Triton runs at {ratio:.2f}x SDPA's speed "
            f"(target >= {TARGET_RATIO}x on a data-centre GPU: {verdict} on this one)"
        )
    else:
        print(f"forward at T = {TARGET_T}: not measured (T = {', '.join(map(str, t_values))})")
    longest = t_values[-1]
    ran = [mode for mode in PASSES if isinstance(rows[f"{triton_name} {mode}"].get(longest), float)]
    naive = []
    for mode in PASSES:
        ms = rows[f"{naive_name} {mode}"].get(longest)
        naive.append(f"{mode} {cell(ms)} ms" if isinstance(ms, float) else f"{mode} {cell(ms)}")
    print(
        f"T = {longest}: Triton ran {' and '.join(ran) or 'nothing'}; naive attention: "
        f"{', '.join(naive)}"
    )


# --------------------------------------------------------------------------------------
# On the CPU
# --------------------------------------------------------------------------------------


def keras_implementations(tf, keras) -> dict:
    """{row name: (forward(q, k, v, do), forward_backward(q, k, v, do) -> (o, dq, dk, dv))} on
    (B, H, T, D) tensors. XLA's functions are built per call of this (one shape each)."""
    from course.tf.model import manual_attention

    ops = keras.ops

    def dot_product_attention(q, k, v):  # takes and returns (B, T, H, D)
        return ops.dot_product_attention(q, k, v, is_causal=True)

    def with_gradients(attend):
        def forward_backward(q, k, v, do):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out = attend(q, k, v)
            return (out, *tape.gradient(out, [q, k, v], output_gradients=do))

        return forward_backward

    def forward_only(attend):
        return lambda q, k, v, do: attend(q, k, v)

    xla = tf.function(jit_compile=True)
    return {
        "Keras naive (keras.ops)": (
            forward_only(manual_attention),
            with_gradients(manual_attention),
        ),
        "Keras naive, XLA": (
            forward_only(xla(manual_attention)),
            xla(with_gradients(manual_attention)),
        ),
        KERAS_SDPA: (
            forward_only(dot_product_attention),
            with_gradients(dot_product_attention),
        ),
    }


def cpu_benchmark(
    attention, dtype, t_values, triton_t_values, repeats: int, threads: int, why_no_gpu: str
) -> None:
    import torch

    from course import runtime

    tf = runtime.import_tensorflow()  # after Triton: the one order that works in one process
    keras = runtime.import_keras()
    runtime.set_threads(threads)  # before TensorFlow's first operation fixes its pool

    print()
    print(textwrap.fill(f"No GPU figures: {why_no_gpu}", width=100))
    B, H, D, precision = CPU_SHAPE["B"], CPU_SHAPE["H"], CPU_SHAPE["D"], dtype_name(dtype)
    print(
        f"\ncausal attention on the CPU, {plural(torch.get_num_threads(), 'thread')}: "
        f"B {B}, H {H}, D {D}, {precision}; median of {repeats} calls "
        f"({INTERPRETER_REPEATS} interpreted) after a warm-up call"
    )
    tf_dtype = tf.as_dtype(precision)

    torch_rows = torch_implementations(attention, interpreted=True)
    triton_name = next(iter(torch_rows))
    names = [*torch_rows, *keras_implementations(tf, keras)]
    rows = {f"{name} {mode}": {} for name in names for mode in PASSES}
    for T in t_values:
        q, k, v, do = random_inputs(CPU_SHAPE, T, dtype, "cpu")
        results = {}
        for name, attend in torch_rows.items():
            if name == triton_name and T not in triton_t_values:
                continue
            forward, forward_backward, run, _ = torch_calls(attend, q, k, v, do)
            n = INTERPRETER_REPEATS if name == triton_name else repeats
            rows[f"{name} forward"][T] = median_ms(forward, n)
            rows[f"{name} fwd+bwd"][T] = median_ms(forward_backward, n)
            if T == t_values[0]:
                results[name] = [to_numpy(x) for x in run()]

        # The same rounded numbers in TensorFlow; dot_product_attention's layout is (B, T, H, D).
        bhtd = [tf.cast(tf.constant(to_numpy(x)), tf_dtype) for x in (q, k, v, do)]
        bthd = [tf.transpose(x, (0, 2, 1, 3)) for x in bhtd]
        for name, (forward, forward_backward) in keras_implementations(tf, keras).items():
            inputs = bthd if name == KERAS_SDPA else bhtd
            rows[f"{name} forward"][T] = median_ms(partial(forward, *inputs), repeats)
            rows[f"{name} fwd+bwd"][T] = median_ms(partial(forward_backward, *inputs), repeats)
            if T == t_values[0]:
                arrays = [to_numpy(x) for x in forward_backward(*inputs)]
                if inputs is bthd:
                    arrays = [a.transpose(0, 2, 1, 3) for a in arrays]
                results[name] = arrays
        if T == t_values[0]:
            errors = (
                f"max abs difference from torch SDPA in float32 at T = {T} (inputs in {precision}):"
            )
            print_errors(errors, results, reference(q, k, v, do))

    print_table("ms per call", rows, t_values)
    compiled = {name: values for name, values in rows.items() if not name.startswith(triton_name)}
    print_table(
        "GFLOPS (the interpreter's rows left out: they time Python)",
        rates(compiled, CPU_SHAPE, 1e9),
        t_values,
    )
    T = triton_t_values[-1]
    slower = rows[f"{triton_name} forward"][T] / rows["torch SDPA forward"][T]
    print(f"\nat T = {T} the interpreted Triton forward takes {slower:,.0f}x torch SDPA's time.")


# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small T each: a smoke check")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="default: float16 on a GPU, float32 on the CPU",
    )
    parser.add_argument("--threads", type=int, default=0, help="0: one per usable core")
    args = parser.parse_args()

    from course import runtime

    attention = runtime.import_kernels("attention")  # Triton first, interpreted without a GPU
    import torch

    on_gpu = torch.cuda.is_available() and not attention.interpreted()
    dtype = getattr(torch, args.dtype or ("float16" if on_gpu else "float32"))
    threads = runtime.set_threads(args.threads)
    print(runtime.versions_line())
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(
        f"machine: {plural(os.cpu_count(), 'CPU')}, {plural(threads, 'thread')} per op, GPU: {gpu}"
    )

    if on_gpu:
        gpu_benchmark(attention, dtype, GPU_T[:1] if args.quick else GPU_T)
        return
    if torch.cuda.is_available():
        why = (
            "TRITON_INTERPRET is set, so the Triton kernels run in Triton's interpreter even "
            "though there is a GPU; unset it for the GPU benchmark."
        )
    else:
        build = torch.version.cuda
        build = "a CPU-only build" if build is None else f"built for CUDA {build}"
        why = f"torch {torch.__version__} ({build}) sees no CUDA device here."
    why += (
        f" The GPU benchmark (do_bench, B {GPU_SHAPE['B']} H {GPU_SHAPE['H']} D {GPU_SHAPE['D']}"
        f" float16, T {GPU_T[0]}-{GPU_T[-1]}, and the >= {TARGET_RATIO}x SDPA target at "
        f"T = {TARGET_T}) needs CUDA. Below, the Triton kernels run in Triton's interpreter: "
        "their times measure Python running one program after another, not the kernel."
    )
    if args.quick:
        cpu_benchmark(attention, dtype, CPU_T[:1], CPU_TRITON_T[:1], 3, args.threads, why)
    else:
        cpu_benchmark(attention, dtype, CPU_T, CPU_TRITON_T, CPU_REPEATS, args.threads, why)


if __name__ == "__main__":
    main()

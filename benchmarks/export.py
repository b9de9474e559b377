"""One trained GPT exported from both frameworks (ONNX, TFLite; fp32 and int8) against eager.

One model (shakespeare-char-cpu, 2000 steps; --run DIR, or trained here in a temporary
folder) runs up to twelve ways. From PyTorch: torch eager, onnxruntime on the fp32 ONNX export and
on its dynamic int8 quantization. From Keras, the same weights (`course.tf.torch_to_keras`):
Keras eager, the LiteRT interpreter on the fp32 TFLite file, on its dynamic-range int8 file
and on its full int8 file (activations too, calibrated on --calibration training windows),
onnxruntime on Keras' own ONNX export and its int8 quantization, which need tf2onnx, and
the LiteRT interpreter on PyTorch's own TFLite files (fp32, int8 weights) from litert-torch,
an extra of its own (each row says why it is missing when its converter is).

For each the table gives the size on disk (an .onnx file with its external data; eager: the
float32 weights, the tied matrix once), the val loss on the same --windows validation
windows (seed 0), the argmax agreement and max |Δlogits| against its own framework's eager
model (Keras eager's: against torch eager, the model its weights came from), and the median
and p90 latency of one forward pass at batch 1 over a full context (block_size tokens, no KV
cache: what one new token costs with its context), on one thread in every backend
(`set_threads(1)`; one intra-op thread in each onnxruntime session and LiteRT interpreter),
the sessions and interpreters built outside the timer. The latencies are taken in rounds:
each round runs every model 10 times, one model after another, and --runs / 10 rounds
follow 10 warm-up runs of each, so that a change in the machine's load reaches every row
alike instead of whichever model happened to be timed then.

PyTorch's ONNX export is measured twice: the file with a dynamic batch and length (what the
chapter and `python -m course.export` write), and a file exported for the one shape timed
here, (1, block_size) (`to_onnx(..., dynamic=False)`): onnxruntime folds the causal mask
and the shape arithmetic of a fixed-shape graph into constants. The latency target is read
on the fixed-shape file, the deployment of "one new token with its context"; both ratios
are printed.

Targets:
- onnxruntime fp32, fixed shape (1, block_size): median latency <= 0.6 x torch eager's;
- int8 file <= 30% of its fp32 file (ONNX, and TFLite dynamic-range);
- fp32 exports: max |Δlogits| <= 1e-4 against their eager model;
- dynamic int8 (ONNX, TFLite): argmax agreement >= 98%, val loss within 1% of the fp32 file's;
- full int8 TFLite: no target, reported. Calibration sees the causal mask's -inf among the
  attention scores, so their int8 scale is expected near 1e36 and attention to break; the
  largest activation scale in the file is printed with the tensor that has it.

Needs the corpus (COURSE_DATA_DIR or a download), onnxruntime and ai-edge-litert.

    COURSE_DATA_DIR=../shared/data python benchmarks/export.py
    COURSE_DATA_DIR=../shared/data python benchmarks/export.py --quick
    COURSE_DATA_DIR=../shared/data python benchmarks/export.py --run out/shakespeare --json e.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from run_record import RunRecord  # beside this script

PRESET = "shakespeare-char-cpu"
FP32_ATOL = 1e-4  # max |Δlogits| of an fp32 export against its eager model
LATENCY_TARGET = 0.6  # onnxruntime fp32 median / torch eager median
SIZE_TARGET = 0.30  # int8 file / fp32 file
AGREEMENT_TARGET = 0.98  # dynamic int8 argmax agreement with eager
LOSS_TARGET = 0.01  # dynamic int8 val loss: |int8 - fp32| / fp32
HUGE_SCALE = 1e30  # an int8 scale this large rounds every ordinary value to 0
WARMUP = 10  # untimed runs before the timed ones (first-call allocations, caches)
ROUND = 10  # timed calls of one model before the next model's turn
STATIC = "onnx fp32 (torch) 1xT"  # the ONNX file exported for the timed shape only


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def latencies_ms(runners: dict, idx: np.ndarray, runs: int) -> dict[str, tuple[float, float]]:
    """{name: (median, p90)} wall time in ms of each runner(idx), `runs` timed calls each
    after WARMUP untimed ones, taken in rounds of ROUND calls of every runner in turn."""
    for runner in runners.values():
        for _ in range(WARMUP):
            runner(idx)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(1, -(-runs // ROUND))):
        for name, runner in runners.items():
            for _ in range(ROUND):
                start = time.perf_counter()
                runner(idx)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (float(np.median(t)), float(np.percentile(t, 90))) for name, t in times.items()}


def weights_bytes(model) -> int:
    """float32 bytes of the parameters, each tensor once (the tied head is wte)."""
    unique = {p.data_ptr(): p for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in unique.values())


def remembered(runner):
    """`runner` with its logits kept per input: a reference that several exports are
    verified against runs each batch once."""
    from course.export import ExportedModel

    seen: dict = {}

    def run(idx: np.ndarray) -> np.ndarray:
        key = (idx.shape, idx.tobytes())
        if key not in seen:
            seen[key] = runner(idx)
        return seen[key]

    return ExportedModel(run, runner.vocab_size, runner.block_size, runner.name)


def largest_int8_scale(path: Path) -> tuple[float, str, int]:
    """(scale, tensor name) of the int8 tensor of a TFLite file with the largest scale, and
    how many int8 tensors have a scale >= HUGE_SCALE."""
    from ai_edge_litert.interpreter import Interpreter

    found = [(float(np.max(d["quantization_parameters"]["scales"])), d["name"])
             for d in Interpreter(model_path=str(path)).get_tensor_details()
             if d["dtype"] == np.int8 and d["quantization_parameters"]["scales"].size]  # fmt: skip
    scale, name = max(found, default=(float("nan"), "(no int8 tensor)"))
    return scale, name, sum(s >= HUGE_SCALE for s, _ in found)


def measure(runner, size: int, reference, windows, batch_size: int = 32) -> dict:
    """A table row: `runner` verified against `reference` (None: it is the reference); its
    latency is filled in later, with every model's (`latencies_ms`)."""
    from course.export import verify

    report = verify(runner, reference or runner, windows, batch_size=batch_size)
    return {"model": runner.name, "against": reference.name if reference else None,
            "bytes": size, "val_loss": report.val_loss,
            "argmax_agreement": report.argmax_agreement if reference else None,
            "max_abs_logits": report.max_abs_logits if reference else None,
            "median_ms": None, "p90_ms": None, "note": None}  # fmt: skip


def unavailable(name: str, against: str, note: str) -> dict:
    return {"model": name, "against": against, "bytes": None, "val_loss": None,
            "argmax_agreement": None, "max_abs_logits": None, "median_ms": None,
            "p90_ms": None, "note": note}  # fmt: skip


def keras_onnx_rows(keras_gpt, config, scratch: Path, reference, windows) -> list:
    """[(row, runner)] of Keras' own ONNX export and its int8 quantization; or rows saying
    why there are none (runner None)."""
    from course.export import onnx_model, quantize_int8, size_on_disk
    from course.tf import export as tf_export

    names = ("onnx fp32 (keras)", "onnx int8 (keras)")
    try:
        fp32 = tf_export.to_onnx(keras_gpt, scratch / "gpt.keras.onnx")
        int8 = quantize_int8(fp32, scratch / "gpt.keras.int8.onnx")
    except Exception as err:  # ImportError without tf2onnx; a failed conversion otherwise
        if importlib.util.find_spec("tf2onnx") is None:
            note = "not available: tf2onnx not installed"
        else:
            note = f"not available: {type(err).__name__}: {str(err).partition(chr(10))[0]}"
        return [(unavailable(name, reference.name, note), None) for name in names]
    rows = []
    for path in (fp32, int8):
        runner = onnx_model(path, config, threads=1)
        rows.append((measure(runner, size_on_disk(path), reference, windows), runner))
    return rows


def litert_torch_rows(model, config, scratch: Path, reference, windows) -> list:
    """[(row, runner)] of PyTorch -> TFLite with litert-torch, fp32 and int8 weights (files
    of one shape, (1, block_size): verified a window at a time); or rows saying why not."""
    from course.export import size_on_disk
    from course.tf.export import tflite_model
    from course.torch.export import to_tflite

    names = ("tflite fp32 (torch)", "tflite int8 (torch)")
    if importlib.util.find_spec("litert_torch") is None:
        note = "not available: litert-torch not installed (pip install 'twin-gpt[litert-torch]')"
        return [(unavailable(name, reference.name, note), None) for name in names]
    rows = []
    for name, int8 in zip(names, (False, True), strict=True):
        path = to_tflite(model, scratch / f"gpt.torch.{'int8' if int8 else 'fp32'}.tflite",
                         int8=int8)  # fmt: skip
        runner = tflite_model(path, config, threads=1, name=name)
        rows.append((measure(runner, size_on_disk(path), reference, windows, 1), runner))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<28} {'against':<12} {'size (MB)':>10} {'val loss':>9} {'argmax':>8} "
          f"{'max |Δlogits|':>14} {'median ms':>10} {'p90 ms':>8}")  # fmt: skip
    for r in rows:
        against = r["against"] or "-"
        if r["note"]:
            print(f"{r['model']:<28} {against:<12} {r['note']}")
            continue
        agree, diff = r["argmax_agreement"], r["max_abs_logits"]
        agree = "-" if agree is None else f"{agree:.2%}"
        diff = "-" if diff is None else f"{diff:.3g}"
        print(f"{r['model']:<28} {against:<12} {r['bytes'] / 1e6:>10.3f} {r['val_loss']:>9.4f} "
              f"{agree:>8} {diff:>14} {r['median_ms']:>10.3f} {r['p90_ms']:>8.3f}")  # fmt: skip


def checks_of(rows: dict[str, dict], full_scale: tuple[float, str, int]) -> dict:
    """The targets, each {"value", "target", "met", ...}; full int8 is reported only."""
    torch_eager, keras_eager = rows["torch eager"], rows["keras eager"]
    onnx32, onnx8 = rows["onnx fp32 (torch)"], rows["onnx int8 (torch)"]
    tfl32, tfl8 = rows["tflite fp32 (keras)"], rows["tflite int8 dynamic (keras)"]
    full = rows["tflite int8 full (keras)"]
    checks = {}
    eager_ms = torch_eager["median_ms"]
    ratio = rows[STATIC]["median_ms"] / eager_ms
    dynamic_ratio = onnx32["median_ms"] / eager_ms
    checks["onnx_fp32_latency_ratio"] = {"value": ratio, "target": LATENCY_TARGET,
                                         "met": ratio <= LATENCY_TARGET, "file": STATIC,
                                         "dynamic_file_ratio": dynamic_ratio}  # fmt: skip
    pairs = [("onnx", onnx32, onnx8), ("tflite_dynamic", tfl32, tfl8)]
    for key, fp32_name, int8_name in (("onnx_keras", "onnx fp32 (keras)", "onnx int8 (keras)"),
                                      ("tflite_torch", "tflite fp32 (torch)",
                                       "tflite int8 (torch)")):  # fmt: skip
        if rows[fp32_name]["note"] is None:
            pairs.append((key, rows[fp32_name], rows[int8_name]))
    for key, fp32, int8 in pairs:
        ratio = int8["bytes"] / fp32["bytes"]
        checks[f"{key}_size_ratio"] = {"value": ratio, "target": SIZE_TARGET,
                                       "met": ratio <= SIZE_TARGET, "int8_bytes": int8["bytes"],
                                       "fp32_bytes": fp32["bytes"]}  # fmt: skip
    fp32_rows = [("onnx_fp32", onnx32), ("onnx_fp32_static", rows[STATIC]), ("tflite_fp32", tfl32)]
    for key, name in (("onnx_keras_fp32", "onnx fp32 (keras)"),
                      ("tflite_torch_fp32", "tflite fp32 (torch)")):  # fmt: skip
        if rows[name]["note"] is None:
            fp32_rows.append((key, rows[name]))
    for key, row in fp32_rows:
        value = row["max_abs_logits"]
        checks[f"{key}_max_abs_logits"] = {"value": value, "target": FP32_ATOL,
                                           "met": value <= FP32_ATOL}  # fmt: skip
    for key, fp32, int8 in pairs:
        agree = int8["argmax_agreement"]
        checks[f"{key}_argmax_agreement"] = {"value": agree, "target": AGREEMENT_TARGET,
                                             "met": agree >= AGREEMENT_TARGET}  # fmt: skip
        loss8, loss32 = int8["val_loss"], fp32["val_loss"]
        gap = (loss8 - loss32) / loss32
        checks[f"{key}_val_loss_gap"] = {"value": gap, "target": LOSS_TARGET,
                                         "met": abs(gap) <= LOSS_TARGET, "int8": loss8,
                                         "fp32": loss32}  # fmt: skip
    scale, tensor, huge = full_scale
    checks["tflite_full_int8"] = {"argmax_agreement": full["argmax_agreement"],
                                  "val_loss": full["val_loss"], "fp32_val_loss": tfl32["val_loss"],
                                  "largest_int8_scale": scale, "largest_scale_tensor": tensor,
                                  "tensors_with_huge_scale": huge, "met": None}  # fmt: skip
    checks["keras_vs_torch"] = {"max_abs_logits": keras_eager["max_abs_logits"],
                                "argmax_agreement": keras_eager["argmax_agreement"],
                                "val_loss": keras_eager["val_loss"],
                                "torch_val_loss": torch_eager["val_loss"], "met": None}  # fmt: skip
    return checks


def print_checks(checks: dict) -> None:
    c = checks["onnx_fp32_latency_ratio"]
    print(f"\nonnx fp32 latency     {c['value']:.2f} x torch eager's median (file of fixed shape)"
          f"   target <= {LATENCY_TARGET}: {met(c['met'])}\n{'':<21} "
          f"{c['dynamic_file_ratio']:.2f} x with the dynamic file; no target")  # fmt: skip
    int8_labels = {
        "onnx": "onnx int8",
        "tflite_dynamic": "tflite int8 dynamic",
        "onnx_keras": "onnx int8 (keras)",
        "tflite_torch": "tflite int8 (torch)",
    }
    int8_labels = {k: v for k, v in int8_labels.items() if f"{k}_size_ratio" in checks}
    for key, label in int8_labels.items():
        c = checks[f"{key}_size_ratio"]
        print(f"{label + ' size':<25} {c['int8_bytes']:,} / {c['fp32_bytes']:,} bytes = "
              f"{c['value']:.1%}   "
              f"target <= {SIZE_TARGET:.0%}: {met(c['met'])}")  # fmt: skip
    for key, label in (("onnx_fp32", "onnx fp32"), ("onnx_fp32_static", "onnx fp32 fixed"),
                       ("tflite_fp32", "tflite fp32"),
                       ("onnx_keras_fp32", "onnx fp32 (keras)"),
                       ("tflite_torch_fp32", "tflite fp32 (torch)")):  # fmt: skip
        if f"{key}_max_abs_logits" in checks:
            c = checks[f"{key}_max_abs_logits"]
            print(f"{label:<21} max |Δlogits| {c['value']:.3g}   target <= {FP32_ATOL}: "
                  f"{met(c['met'])}")  # fmt: skip
    for key, label in int8_labels.items():
        c = checks[f"{key}_argmax_agreement"]
        print(f"{label:<21} argmax {c['value']:.2%} agree with eager   target >= "
              f"{AGREEMENT_TARGET:.0%}: {met(c['met'])}")  # fmt: skip
        c = checks[f"{key}_val_loss_gap"]
        print(f"{'':<21} val loss {c['int8']:.4f} vs fp32 {c['fp32']:.4f} ({c['value']:+.2%})   "
              f"target within {LOSS_TARGET:.0%}: {met(c['met'])}")  # fmt: skip
    c = checks["tflite_full_int8"]
    gap = c["val_loss"] - c["fp32_val_loss"]
    print(f"tflite int8 full      argmax {c['argmax_agreement']:.2%} agree with eager, val loss "
          f"{c['val_loss']:.4f} vs fp32 {c['fp32_val_loss']:.4f} ({gap:+.4f}); no target\n"
          f"{'':<21} largest int8 scale {c['largest_int8_scale']:.3g} "
          f"({c['largest_scale_tensor']}); {c['tensors_with_huge_scale']} int8 tensor(s) with a "
          f"scale >= {HUGE_SCALE:.0e}")  # fmt: skip
    c = checks["keras_vs_torch"]
    print(f"same model            keras eager vs torch eager: max |Δlogits| "
          f"{c['max_abs_logits']:.3g}, argmax {c['argmax_agreement']:.2%}, val loss "
          f"{c['val_loss']:.4f} vs {c['torch_val_loss']:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a PyTorch run folder (ckpt.pt) of "
                        f"{PRESET}; default: train one in a temporary folder")  # fmt: skip
    parser.add_argument("--runs", type=int, default=None, help="timed runs per model (200)")
    parser.add_argument("--windows", type=int, default=None, help="val windows (256)")
    parser.add_argument("--calibration", type=int, default=None,
                        help="training windows that calibrate full int8 (100)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: train 60 steps, "
                        "--runs 20, --windows 16, --calibration 8")  # fmt: skip
    parser.add_argument("--json", default=None, help="write the rows and checks to this file")
    args = parser.parse_args()
    args.runs = args.runs or (20 if args.quick else 200)
    args.windows = args.windows or (16 if args.quick else 256)
    args.calibration = args.calibration or (8 if args.quick else 100)
    run = RunRecord()

    from course import runtime
    from course.config import get_preset
    from course.data import corpus_tokens, get_batch
    from course.export import onnx_model, quantize_int8, size_on_disk
    from course.torch.export import eager_model, to_onnx
    from course.torch.train import load_model, train

    rows = {}
    with tempfile.TemporaryDirectory(prefix="export-benchmark-") as tmp:
        scratch = Path(tmp)
        run_dir = Path(args.run) if args.run else scratch / "run"
        if args.run is None:
            train_ids, val_ids, tok = corpus_tokens()
            quick = {"max_iters": 60, "warmup_iters": 6, "eval_iters": 4} if args.quick else {}
            train(get_preset(PRESET, quick), run_dir, data=(train_ids, val_ids), tokenizer=tok)
        model, tok = load_model(run_dir)
        train_ids, val_ids, _ = corpus_tokens(tokenizer=tok)
        config = model.config
        # TensorFlow after PyTorch, through the course's one safe way; then one thread in
        # every framework, before TensorFlow's first operation fixes its pool.
        tf = runtime.import_tensorflow()
        runtime.set_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)  # as the onnxruntime sessions
        from course.tf import GPT as KerasGPT
        from course.tf import export as tf_export
        from course.tf import torch_to_keras

        windows = get_batch(val_ids, args.windows, config.block_size, np.random.default_rng(0))
        calibration, _ = get_batch(train_ids, args.calibration, config.block_size,
                                   np.random.default_rng(1))  # fmt: skip
        idx = windows[0][:1]  # batch 1, a full context

        # PyTorch: eager, and onnxruntime on its fp32 export (dynamic shapes, and the timed
        # shape only) and on the dynamic file's int8 quantization
        onnx32 = to_onnx(model, scratch / "gpt.onnx")
        onnx_static = to_onnx(model, scratch / "gpt.1xT.onnx", dynamic=False)
        onnx8 = quantize_int8(onnx32, scratch / "gpt.int8.onnx")
        torch_eager = eager_model(model)
        torch_reference = remembered(torch_eager)  # verified against; timed: torch_eager
        runners = {}
        for runner, size, reference, batch in (
            (torch_eager, weights_bytes(model), None, 32),
            (onnx_model(onnx32, config, threads=1), size_on_disk(onnx32), torch_reference, 32),
            (onnx_model(onnx_static, config, threads=1, name=STATIC), size_on_disk(onnx_static),
             torch_reference, 1),  # the file takes (1, block_size) only
            (onnx_model(onnx8, config, threads=1), size_on_disk(onnx8), torch_reference, 32),
        ):  # fmt: skip
            rows[runner.name] = measure(runner, size, reference, windows, batch)
            runners[runner.name] = runner

        # Keras, the same weights: eager (against torch eager), TFLite three ways, ONNX
        keras_gpt = torch_to_keras(model.state_dict(), KerasGPT(config))
        keras_eager = tf_export.eager_model(keras_gpt)
        keras_reference = remembered(keras_eager)
        rows["keras eager"] = measure(keras_eager, keras_gpt.num_params(non_embedding=False) * 4,
                                      torch_reference, windows)  # fmt: skip
        runners["keras eager"] = keras_eager
        for mode in (None, "dynamic", "full"):
            name = f"tflite {f'int8 {mode}' if mode else 'fp32'} (keras)"
            path = scratch / f"gpt.{mode or 'fp32'}.tflite"
            tf_export.to_tflite(keras_gpt, path, int8=mode,
                                representative=calibration if mode == "full" else None)  # fmt: skip
            runners[name] = tf_export.tflite_model(path, config, threads=1, name=name)
            rows[name] = measure(runners[name], size_on_disk(path), keras_reference, windows)
        full_scale = largest_int8_scale(scratch / "gpt.full.tflite")
        for row, runner in keras_onnx_rows(
            keras_gpt, config, scratch, keras_reference, windows
        ) + litert_torch_rows(model, config, scratch, torch_reference, windows):
            rows[row["model"]] = row
            if runner is not None:
                runners[row["model"]] = runner

        # Every model timed in the same rounds
        for name, (median, p90) in latencies_ms(runners, idx, args.runs).items():
            rows[name]["median_ms"], rows[name]["p90_ms"] = median, p90

    print(f"\n== {PRESET}: {config.n_layer} layers, n_embd {config.n_embd}, block_size "
          f"{config.block_size}; {args.windows} val windows; batch 1 x {config.block_size} "
          f"tokens, {args.runs} runs in rounds of {ROUND}, 1 thread; full int8 calibrated on "
          f"{args.calibration} training windows\n")  # fmt: skip
    print_table(list(rows.values()))
    checks = checks_of(rows, full_scale)
    print_checks(checks)
    finished = run.finish()
    if args.json:
        record = {"rows": list(rows.values()), "checks": checks, "runs": args.runs,
                  "windows": args.windows, "calibration": args.calibration, "run": args.run,
                  **finished}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

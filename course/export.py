"""An exported GPT, whatever made it: checked inputs, and a check that it matches its source.

Framework-neutral (numpy at import; the command line imports the run's framework):
`course.torch.export` and `course.tf.export` each turn their model into a file (ONNX,
TFLite, ...) and wrap the runtime that reads it in an `ExportedModel`; `verify` then
compares it with the eager model on validation windows.

    from course.export import ExportedModel, onnx_model, size_on_disk, verify
    onnx = onnx_model("gpt.onnx", config)                  # an ExportedModel (onnxruntime)
    report = verify(onnx, course.torch.export.eager_model(model), (x, y))
    print(report)            # max |Δlogits|, argmax agreement, val loss of both
    assert report.ok(atol=1e-4)

A runner is any callable idx (B, T) int64 -> logits (B, T, vocab) float32 on numpy arrays.
An exported file has no input checks of its own: an id past the vocabulary may gather a
row of garbage (or crash inside the runtime) rather than fail clearly. `ExportedModel`
checks what the eager GPT checks, before the runtime sees the ids.

From the shell, for either framework's run (verified on the run's validation text):

    python -m course.export --out runs/torch --format onnx [--int8]
    python -m course.export --out runs/keras --format tflite [--int8]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from course.checks import check_int, to_numpy
from course.config import GPTConfig
from course.finetune import file_bytes

Runner = Callable[[np.ndarray], Any]  # idx (B, T) int64 -> logits (B, T, vocab)

IGNORE_INDEX = -1  # a target of -1 is left out of the loss, as in the models' forward


class ExportedModel:
    """A runner `fn` (idx int64 (B, T) -> logits (B, T, vocab)) with the GPT's input checks.

    `name` says what runs (e.g. "onnx fp32 (torch)"); `path` is the file it reads, if any.
    Calling it checks idx (an integer array of shape (B, T), 1 <= T <= block_size, every id
    in 0..vocab_size - 1), casts it to int64, and returns float32 logits (B, T, vocab).
    idx may be a numpy array, a torch or TensorFlow tensor, or a nested list.

    A 1-D idx is rejected, as the eager GPT rejects it: (T,) could mean one sequence or T
    sequences of one token, and the answer decides the shape of the logits. Use idx[None].
    """

    def __init__(
        self,
        fn: Runner,
        vocab_size: int,
        block_size: int,
        name: str,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable (idx -> logits), got {type(fn).__name__}")
        check_int("vocab_size", vocab_size, 1)
        check_int("block_size", block_size, 1)
        self.fn = fn
        self.vocab_size, self.block_size = int(vocab_size), int(block_size)
        self.name = str(name)
        self.path = None if path is None else Path(path)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return (
            f"ExportedModel({self.name!r}, vocab_size={self.vocab_size}, "
            f"block_size={self.block_size}{where})"
        )

    def check_input(self, idx) -> np.ndarray:
        """idx as a C-contiguous int64 (B, T) array, or a clear error saying what is wrong."""
        arr = to_numpy(idx)
        if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
            raise TypeError(
                f"idx must hold integer token ids, got dtype {arr.dtype}; tokens are indices "
                "into the embedding table, not values"
            )
        if arr.ndim != 2:
            hint = "; add a batch dimension with idx[None] for one sequence" * (arr.ndim == 1)
            raise ValueError(f"idx must have shape (B, T), got {arr.shape}{hint}")
        B, T = arr.shape
        if B == 0:
            raise ValueError(f"idx has no rows (shape {arr.shape}): give at least one sequence")
        if T == 0:
            raise ValueError("idx is empty (T = 0): give the model at least one token")
        if T > self.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size {self.block_size}; crop the context "
                f"to its last {self.block_size} tokens"
            )
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"token id {bad} is outside the vocabulary 0..{self.vocab_size - 1} "
                f"(vocab_size {self.vocab_size})"
            )
        return np.ascontiguousarray(arr, dtype=np.int64)

    def __call__(self, idx) -> np.ndarray:
        ids = self.check_input(idx)
        logits = np.asarray(to_numpy(self.fn(ids)), dtype=np.float32)
        want = (*ids.shape, self.vocab_size)
        if logits.shape != want:
            raise RuntimeError(
                f"{self.name} returned logits of shape {logits.shape}, expected {want} "
                "(B, T, vocab_size): is the file for this config?"
            )
        return logits


# --------------------------------------------------------------------------------------
# Does the export compute what the model computes?
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """How an exported model's logits compare with a reference's on the same windows.

    max_abs_logits: the largest |exported - reference| over every logit (not probability);
    argmax_agreement: the fraction of positions whose most likely next token is the same;
    val_loss, reference_val_loss: mean cross-entropy of the targets under each (float64).
    """

    name: str
    reference_name: str
    max_abs_logits: float
    argmax_agreement: float
    val_loss: float
    reference_val_loss: float
    n_windows: int
    n_positions: int  # positions compared (every position of every window)

    @property
    def loss_gap(self) -> float:
        """val_loss - reference_val_loss: what the export costs (or gains) in loss."""
        return self.val_loss - self.reference_val_loss

    def ok(self, atol: float = 1e-4, min_agreement: float | None = None) -> bool:
        """True if every logit is within `atol` of the reference's (and, if given, at least
        `min_agreement` of the argmaxes agree). NaN anywhere is never ok."""
        close = self.max_abs_logits <= atol  # False for NaN
        agree = min_agreement is None or self.argmax_agreement >= min_agreement
        return bool(close and agree)

    def format(self) -> str:
        """One line: what was compared, and the four numbers."""
        return (
            f"{self.name} vs {self.reference_name}: max |Δlogits| {self.max_abs_logits:.3g}, "
            f"argmax agreement {self.argmax_agreement:.2%}, val loss {self.val_loss:.4f} "
            f"(reference {self.reference_val_loss:.4f}) over {self.n_windows} windows, "
            f"{self.n_positions} positions"
        )

    __str__ = format


def _name(runner: Runner) -> str:
    return str(getattr(runner, "name", None) or getattr(runner, "__name__", type(runner).__name__))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis in float64, stable: shift by the row maximum first."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _logits(runner: Runner, idx: np.ndarray, which: str) -> np.ndarray:
    out = to_numpy(runner(idx))
    if out.ndim != 3 or out.shape[:2] != idx.shape:
        raise ValueError(
            f"{which} ({_name(runner)}) returned logits of shape {out.shape} for idx of shape "
            f"{idx.shape}; expected (B, T, vocab)"
        )
    return out


def verify(
    exported: Runner,
    reference: Runner,
    windows: tuple[Any, Any],
    batch_size: int = 32,
) -> Verification:
    """Compare `exported` with `reference` on validation windows (x, y), both (N, T) ids.

    Both runners see the same x, `batch_size` windows at a time (only one batch of logits is
    held at once). Targets y of -1 are left out of the losses; every position counts for
    the logits difference and the argmax agreement.
    """
    if not isinstance(windows, tuple | list) or len(windows) != 2:
        raise TypeError("windows must be a pair (x, y) of (N, T) token-id arrays")
    x, y = (to_numpy(w) for w in windows)
    for label, arr in (("x", x), ("y", y)):
        if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
            raise TypeError(f"windows' {label} must hold integer token ids, got {arr.dtype}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"windows' x must have shape (N, T) with N, T >= 1, got {x.shape}")
    if y.shape != x.shape:
        raise ValueError(f"windows' y must have the shape of x {x.shape}, got {y.shape}")
    check_int("batch_size", batch_size, 1)
    x, y = np.ascontiguousarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)

    maxima, agree, positions = [], 0, 0
    loss_sum, ref_loss_sum, counted = 0.0, 0.0, 0
    for rows in _batches(len(x), batch_size):
        xb, yb = x[rows], y[rows]
        got = _logits(exported, xb, "exported")
        want = _logits(reference, xb, "reference")
        if got.shape != want.shape:
            raise ValueError(
                f"exported logits have shape {got.shape}, the reference's {want.shape}"
            )
        vocab = got.shape[-1]
        keep = yb != IGNORE_INDEX
        bad = yb[keep][(yb[keep] < 0) | (yb[keep] >= vocab)]
        if bad.size:
            raise ValueError(
                f"target id {int(bad[0])} is outside the vocabulary 0..{vocab - 1} "
                f"(vocab_size {vocab}); use -1 to leave a position out"
            )
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        maxima.append(diff.max())  # NaN if any logit is NaN: np.max keeps it, so ok() fails
        agree += int((got.argmax(axis=-1) == want.argmax(axis=-1)).sum())
        positions += xb.size
        targets = np.where(keep, yb, 0)[..., None]
        for logits, is_ref in ((got, False), (want, True)):
            nll = -np.take_along_axis(log_softmax(logits), targets, axis=-1)[..., 0]
            total = float(nll[keep].sum())
            if is_ref:
                ref_loss_sum += total
            else:
                loss_sum += total
        counted += int(keep.sum())
    denominator = counted if counted else math.nan
    return Verification(
        name=_name(exported),
        reference_name=_name(reference),
        max_abs_logits=float(np.max(maxima)),
        argmax_agreement=agree / positions,
        val_loss=loss_sum / denominator,
        reference_val_loss=ref_loss_sum / denominator,
        n_windows=len(x),
        n_positions=positions,
    )


# --------------------------------------------------------------------------------------
# Size on disk
# --------------------------------------------------------------------------------------


def size_on_disk(path: str | os.PathLike[str]) -> int:
    """Bytes an exported model takes: a file, a folder (e.g. a SavedModel: every file in it),
    or an .onnx file plus the external data files its tensors point to (each counted once).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no exported model at {path}")
    files = [path]
    if path.is_file() and path.suffix.lower() == ".onnx":
        for name in sorted(onnx_external_files(path)):
            data = path.parent / name
            if not data.is_file():
                raise FileNotFoundError(
                    f"{path.name} keeps tensors in {name}, which is missing from {path.parent}"
                )
            files.append(data)
    return file_bytes(files)


def onnx_external_files(path: str | os.PathLike[str]) -> set[str]:
    """The external data files (relative to the model's folder) an .onnx file refers to.

    ONNX keeps a large tensor outside the protobuf when the model would pass 2 GB, or when
    asked: the tensor's data_location is EXTERNAL and its external_data holds key/value
    pairs, "location" the file name. Reads only the graph (onnx imported here, lazily).
    """
    import onnx  # the export extra; only needed for .onnx files

    model = onnx.load(str(path), load_external_data=False)
    external = onnx.TensorProto.EXTERNAL
    return {
        entry.value
        for tensor in _onnx_tensors(model)
        if tensor.data_location == external
        for entry in tensor.external_data
        if entry.key == "location"
    }


def _onnx_tensors(model) -> Iterator[Any]:
    """Every TensorProto of an ONNX model: initializers, sparse ones, node attributes, in
    the main graph, its subgraphs (If/Loop bodies) and local functions."""
    graphs = [model.graph]
    node_lists = [f.node for f in model.functions]
    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            node_lists.append(graph.node)
            continue
        for node in node_lists.pop():
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)


def quiet_exporters() -> None:
    """Silence what the exporters say that is not about your model, for this process:
    torch.onnx's notes that torchvision is not installed, FutureWarnings from torch.export
    and Keras' tf2onnx glue, TensorFlow's and tf2onnx's log lines. In a notebook
    they land on stderr, and nbgrader scores a test cell that wrote to stderr 0."""
    import logging
    import warnings

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)",
                            category=FutureWarning)  # fmt: skip
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"In the future `np.object`",
                            category=FutureWarning)  # Keras' tf2onnx glue asks NumPy  # fmt: skip


class _DropPreprocessingAdvice:
    """A logging filter for onnxruntime's advice, logged on the root logger at every
    quantize_dynamic call, to pre-process a model first (shape inference for CNNs)."""

    def filter(self, record) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


# --------------------------------------------------------------------------------------
# ONNX files, from either framework: one runner
# --------------------------------------------------------------------------------------

EXPORT_EXTRA = "pip install 'twin-gpt[export]'"
ONNX_INPUT, ONNX_OUTPUT = "idx", "logits"  # the names course.torch.export.to_onnx gives
QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear")  # int8 marks
_ONNX_INTS = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
_PRODUCERS = {"pytorch": "torch", "tf2onnx": "keras"}  # the graph's producer_name: its source


def runner_file(path, config: GPTConfig, threads: int, kind: str) -> Path:
    """The checked arguments of a runner of an exported file: `path` as a Path to a file
    that exists (FileNotFoundError naming the `kind` of file otherwise), `config` a
    GPTConfig, `threads` >= 1."""
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a course.config.GPTConfig, got {type(config).__name__}")
    check_int("threads", threads, 1)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} file at {path}")
    return path


def onnx_model(
    path: str | os.PathLike[str], config: GPTConfig, threads: int = 1, name: str | None = None
) -> ExportedModel:
    """The ONNX GPT at `path` (one integer input (B, T), int32 or int64, whatever its
    name; logits first among the outputs), run by onnxruntime on the CPU with `threads`
    threads in an op (the session built once), as an ExportedModel that checks ids against
    `config`. `name` defaults to "onnx fp32 (torch)", "onnx int8 (keras)", ..., read from
    the graph. A file exported with a fixed shape takes only that shape, and says so."""
    path = runner_file(path, config, threads, "ONNX")
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"running an ONNX file needs onnx and onnxruntime: {EXPORT_EXTRA}"
        ) from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in _ONNX_INTS:
        found = [(i.name, i.type) for i in inputs]
        raise ValueError(f"{path} is not a GPT file: expected one integer input idx, got {found}")
    vocab = session.get_outputs()[0].shape[-1]
    if isinstance(vocab, int) and vocab != config.vocab_size:
        raise ValueError(
            f"{path.name} gives logits over {vocab} tokens, but config.vocab_size is "
            f"{config.vocab_size}: is this the file of another model?"
        )
    input_name, dtype = inputs[0].name, _ONNX_INTS[inputs[0].type]
    output_name = session.get_outputs()[0].name
    fixed = tuple(inputs[0].shape)
    static = all(isinstance(d, int) for d in fixed)

    def run(idx: np.ndarray) -> np.ndarray:
        if static and idx.shape != fixed:
            raise ValueError(
                f"{path.name} was exported with a fixed input shape {fixed} (dynamic=False), "
                f"got idx of shape {idx.shape}"
            )
        return session.run([output_name], {input_name: idx.astype(dtype, copy=False)})[0]

    if name is None:
        graph = onnx.load(str(path), load_external_data=False)
        int8 = any(node.op_type in QUANTIZED_OPS for node in graph.graph.node)
        source = _PRODUCERS.get(graph.producer_name, graph.producer_name or "unknown")
        name = f"onnx {'int8' if int8 else 'fp32'} ({source})"
    return ExportedModel(run, config.vocab_size, config.block_size, name, path=path)


def quantize_int8(onnx_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Dynamic int8 quantization of an ONNX file (from either framework): weights stored as
    int8 with a scale, activations quantized on the fly per call (no calibration data).
    Returns `out_path`. The file keeps its producer's name, so `onnx_model` still says
    which framework it came from.

    Roughly 4x smaller weights; matrix products run as integer ops in onnxruntime.
    `course.export.verify` says what it costs in logits, argmax agreement and val loss.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX file at {onnx_path}")
    if onnx_path.resolve() == out_path.resolve():
        raise ValueError(f"out_path must differ from onnx_path ({onnx_path}): keep the fp32 file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    producer = onnx.load(str(onnx_path), load_external_data=False).producer_name
    import logging

    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(onnx_path, out_path, weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(advice)
    quantized = onnx.load(str(out_path))
    if producer and quantized.producer_name != producer:  # "onnx.quantize" otherwise
        quantized.producer_name = producer
        onnx.save(quantized, str(out_path))
    onnx.checker.check_model(str(out_path))
    return out_path


# --------------------------------------------------------------------------------------
# The command line: python -m course.export --out RUN --format onnx|tflite [--int8]
# --------------------------------------------------------------------------------------

FORMATS = ("onnx", "tflite")
EXPORT_FOLDER = "export"  # in the run's folder, unless --file says otherwise
FP32_ATOL = 1e-4  # an fp32 export whose logits differ more from its model's is refused


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m course.export",
        description="Export a trained run (either framework's checkpoint) to ONNX or TFLite, "
        "then check it against the model on validation windows of the run's corpus.",
    )
    parser.add_argument("--out", required=True, help="the run's folder (ckpt.pt or ckpt/)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--int8", action="store_true",
                        help="dynamic-range int8 weights (ONNX: quantize_dynamic; TFLite: "
                        "Optimize.DEFAULT without calibration data)")  # fmt: skip
    parser.add_argument("--file", default=None,
                        help=f"where to write the model (default: OUT/{EXPORT_FOLDER}/"
                        "model[.int8].onnx|tflite)")  # fmt: skip
    parser.add_argument("--windows", type=int, default=64,
                        help="validation windows (block_size tokens) to verify on")  # fmt: skip
    return parser


def _run_framework(out: Path) -> str:
    from course.metrics import KERAS_CHECKPOINT, TORCH_CHECKPOINT

    if (out / TORCH_CHECKPOINT).exists():
        return "torch"
    if (out / KERAS_CHECKPOINT).exists():
        return "tf"
    raise FileNotFoundError(
        f"{out} holds no checkpoint ({TORCH_CHECKPOINT} or {KERAS_CHECKPOINT}/): give the "
        "--out folder of a `python -m course.train` run"
    )


def export_run(out, fmt: str, *, int8: bool = False, file=None) -> tuple[Any, Any, Any]:
    """Export the model of the run in `out` to `fmt` ("onnx" or "tflite"; `int8`:
    dynamic-range int8 weights) at `file`; return the exported model (an ExportedModel),
    the model itself as one (the reference to verify it against) and the run's tokenizer."""
    out = Path(out)
    framework = _run_framework(out)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    suffix = f"{'.int8' if int8 else ''}.{fmt}"
    file = Path(file) if file is not None else out / EXPORT_FOLDER / f"model{suffix}"
    if framework == "torch":
        from course.torch import export as backend
        from course.torch.train import load_model
    else:
        from course.tf import export as backend
        from course.tf.train import load_model
    model, tokenizer = load_model(out)
    file.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        fp32 = file.with_name(file.name.replace(".int8", "")) if int8 else file
        backend.to_onnx(model, fp32)
        if int8:
            quantize_int8(fp32, file)
        exported = onnx_model(file, model.config)
    elif framework == "torch":
        backend.to_tflite(model, file, int8=int8)  # one shape: (1, block_size)
        from course.tf.export import tflite_model  # the LiteRT runner (imports TensorFlow)

        name = f"tflite {'int8' if int8 else 'fp32'} (torch)"
        one = tflite_model(file, model.config, name=name)
        exported = ExportedModel(
            lambda idx: np.concatenate([one(row[None]) for row in idx]),  # a row at a time
            model.config.vocab_size, model.config.block_size, one.name, path=file,
        )  # fmt: skip
    else:
        backend.to_tflite(model, file, int8="dynamic" if int8 else None)
        exported = backend.tflite_model(file, model.config)
    return exported, backend.eager_model(model), tokenizer


def main(argv: list[str] | None = None) -> int:
    import sys

    from course.data import corpus_tokens, get_batch

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.windows < 1:
        parser.error(f"--windows must be >= 1, got {args.windows}")
    try:
        exported, reference, tokenizer = export_run(
            args.out, args.format, int8=args.int8, file=args.file
        )
    except (FileNotFoundError, ValueError, NotImplementedError, ImportError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    if tokenizer is None:
        print(f"wrote {exported.path} ({size_on_disk(exported.path):,} bytes); the run has no "
              "tokenizer, so no corpus to verify it on", file=sys.stderr)  # fmt: skip
        return 0
    _, val, _ = corpus_tokens(tokenizer=tokenizer, progress=False)
    windows = get_batch(val, args.windows, exported.block_size, np.random.default_rng(0))
    report = verify(exported, reference, windows)
    print(f"wrote {exported.path} ({size_on_disk(exported.path):,} bytes)")
    print(report)
    if not args.int8 and not report.ok(atol=FP32_ATOL):
        print(f"{parser.prog}: error: the fp32 export's logits differ from the model's by "
              f"{report.max_abs_logits:.3g} > {FP32_ATOL}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

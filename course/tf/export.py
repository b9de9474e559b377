"""The Keras GPT as a file other runtimes read: TFLite (LiteRT) and ONNX (chapter 10).

The mirror of `course.torch.export`. Each exporter writes a file; each loader wraps the
runtime that reads it in a `course.export.ExportedModel` (input checks first, then the
runtime), so `course.export.verify` can compare it with the Keras model it came from:

    from course.tf.export import eager_model, tflite_model, to_tflite
    to_tflite(model, "gpt.tflite")                              # fp32, builtin ops only
    to_tflite(model, "gpt-int8.tflite", int8="dynamic")         # int8 weights
    lite = tflite_model("gpt.tflite", model.config, threads=2)  # an ExportedModel
    print(verify(lite, eager_model(model), (x, y)))

How the TFLite file is made, and why:

- Keras model -> SavedModel (a `keras.export.ExportArchive` with one `serve` endpoint taking
  idx int32 (B, T), both dynamic) -> `tf.lite.TFLiteConverter.from_saved_model`. Going
  through a SavedModel freezes the weights into the file (converting a concrete function
  of a trackable model leaves them as variables, which the interpreter reads as NaN).
- Builtin TFLite ops only. `model.export(format="litert")` lets the converter fall back to
  TensorFlow kernels ("Flex" ops, SELECT_TF_OPS), which the plain LiteRT interpreter cannot
  run; here a model that would need one is refused at export, naming the op(s).
- The GPT is traced with its manual attention. Keras' fused attention (attn_impl="sdpa")
  slices its boolean causal mask up to four dimensions, a `tf.StridedSlice` TFLite has no
  builtin kernel for; the manual attention computes the same function with builtin ops.
  The model's own setting is put back afterwards.
- B and T stay dynamic in the file: the interpreter is resized to each call's shape (and
  re-allocated only when the shape changes), so no padding is needed. The file does not
  check T <= block_size or the ids: `ExportedModel` does, before the interpreter runs.

Quantization (`int8=`): "dynamic" stores weights as int8 and computes in float (no data
needed); "full" also runs activations in int8, with scales calibrated on `representative`
token windows. tests/test_tf_export.py measures both on a small GPT trained on Tiny
Shakespeare: "dynamic" keeps about 99% of the argmaxes and the validation loss; "full"
converts and runs but breaks the attention. Calibration sees the causal mask's -inf among
the attention scores, so their int8 scale becomes float32's largest value / 255 (about
1e36), every visible score rounds to zero, and attention becomes a plain average over the
past (about 75% of the argmaxes kept, val loss +0.1 or more). A model that barely needs
attention survives it, which is why a toy model can hide the problem.

ONNX: Keras 3 exports ONNX on the TensorFlow backend through the `tf2onnx` package (in the
`export` extra; without it `to_onnx` says so). `course.export.onnx_model` runs the file with
onnxruntime, as it runs PyTorch's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from course import runtime
from course.checks import to_numpy
from course.config import GPTConfig
from course.export import EXPORT_EXTRA, ExportedModel, onnx_model, runner_file  # noqa: F401
from course.files import write_bytes
from course.tf.model import GPT

keras = runtime.import_keras()  # TensorFlow backend, loaded safely beside Triton
tf = runtime.import_tensorflow()

INT8_MODES = (None, "dynamic", "full")

# How the converter names an op it has no builtin kernel for (the error's text).
_NO_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


# --------------------------------------------------------------------------------------
# Keras -> a SavedModel with one signature
# --------------------------------------------------------------------------------------


def _input_signature(model) -> list:
    """The traced inputs: idx int32 (B, T), both dynamic, for the GPT; a functional
    model's own `inputs` otherwise (the batch axis left dynamic)."""
    if isinstance(model, GPT):
        return [tf.TensorSpec((None, None), tf.int32, name="idx")]
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise TypeError(
            f"cannot tell what {type(model).__name__} takes: export a course.tf.GPT or a "
            "functional keras.Model (one built from keras.Input)"
        )
    return [
        tf.TensorSpec((None, *x.shape[1:]), keras.backend.standardize_dtype(x.dtype))
        for x in inputs
    ]


@contextlib.contextmanager
def _manual_attention(model) -> Iterator[None]:
    """Trace the GPT's attention with attn_impl="manual" (builtin TFLite ops only), then put
    each layer's own setting back. Anything else is traced as it is."""
    layers = [block.attn for block in model.h] if isinstance(model, GPT) else []
    saved = [layer.attn_impl for layer in layers]
    try:
        for layer in layers:
            layer.attn_impl = "manual"
        yield
    finally:
        for layer, impl in zip(layers, saved, strict=True):
            layer.attn_impl = impl


def _write_saved_model(model, folder: str) -> None:
    """`model` in inference mode as a SavedModel with one signature, serving_default."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    with _manual_attention(model):
        archive.add_endpoint(
            "serve",
            functools.partial(model.__call__, training=False),
            input_signature=_input_signature(model),
        )
        archive.write_out(folder, verbose=False)  # traces here, so still inside


# --------------------------------------------------------------------------------------
# TFLite (LiteRT)
# --------------------------------------------------------------------------------------


def _representative_windows(representative, model) -> np.ndarray:
    """The calibration windows as an int32 (N, T) array, checked."""
    if representative is None:
        raise ValueError(
            "int8='full' needs representative=token windows, an int array (N, T) such as the "
            "x of a few training batches: activation scales are calibrated on them"
        )
    windows = to_numpy(representative)
    if windows.dtype == np.bool_ or windows.dtype.kind not in "iu":
        raise TypeError(f"representative must hold integer token ids, got dtype {windows.dtype}")
    if windows.ndim != 2 or 0 in windows.shape:
        raise ValueError(
            f"representative must have shape (N, T) with N, T >= 1, got {windows.shape}"
        )
    if isinstance(model, GPT):
        config = model.config
        if windows.shape[1] > config.block_size:
            raise ValueError(
                f"representative windows are {windows.shape[1]} tokens long, more than "
                f"block_size {config.block_size}"
            )
        low, high = int(windows.min()), int(windows.max())
        if low < 0 or high >= config.vocab_size:
            raise ValueError(
                f"representative holds token id {low if low < 0 else high}, outside the "
                f"vocabulary 0..{config.vocab_size - 1}"
            )
    return windows.astype(np.int32)


def _ops_without_builtin(error: Exception) -> list[str]:
    """The TensorFlow ops a converter error says TFLite has no builtin kernel for."""
    names = set(_NO_BUILTIN.findall(str(error)))
    for data in getattr(error, "errors", []):  # the converter's structured errors, if any
        name = getattr(getattr(data, "operator", None), "name", "")
        if name.startswith("tf."):
            names.add(name[3:])
    return sorted(names)


def _convert(converter, model) -> bytes:
    """Run the converter; an op without a builtin kernel becomes a ValueError naming it."""
    try:
        return converter.convert()
    except Exception as err:  # the converter raises ConverterError, or others on older TF
        ops = _ops_without_builtin(err)
        if not ops:
            raise
        raise ValueError(
            f"{type(model).__name__} needs TensorFlow op(s) with no builtin TFLite kernel: "
            f"{', '.join(ops)}. The LiteRT interpreter cannot run them (they would need the "
            "TensorFlow fallback, Flex / SELECT_TF_OPS), so nothing was written: replace "
            "them with other ops in the model"
        ) from None


def to_tflite(
    model,
    path: str | os.PathLike[str],
    *,
    int8: str | None = None,
    representative=None,
) -> Path:
    """Write `model` (a course.tf.GPT, or a functional keras.Model) as a TFLite file.

    int8=None keeps float32; "dynamic" stores weights in int8 (dynamic-range quantization,
    no data needed); "full" runs activations in int8 too, calibrated on `representative`:
    token windows, an int array (N, T) with T <= block_size (one window per calibration
    run). Only builtin TFLite ops are allowed: a model that would need TensorFlow's own
    kernels raises ValueError naming the ops, and nothing is written. The GPT's signature
    is idx int32 (B, T), B and T dynamic, returning float32 logits (B, T, vocab). The file
    is written atomically; returns its path.
    """
    if int8 not in INT8_MODES:
        raise ValueError(f"int8 must be one of {INT8_MODES}, got {int8!r}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model (a course.tf.GPT), got {type(model)}")
    if int8 == "full":
        windows = _representative_windows(representative, model)
    elif representative is not None:
        raise ValueError(
            f"representative is only used with int8='full' (got int8={int8!r}): drop it, or "
            "ask for full-integer quantization"
        )
    with tempfile.TemporaryDirectory(prefix="twin-gpt-savedmodel-") as folder:
        _write_saved_model(model, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if int8 is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if int8 == "full":

            def calibration() -> Iterator[list[np.ndarray]]:
                for window in windows:
                    yield [window[None]]  # (1, T)

            converter.representative_dataset = calibration
        flatbuffer = _convert(converter, model)
    return write_bytes(path, flatbuffer)


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
        raise ImportError(
            f"running a TFLite file needs the LiteRT interpreter (ai-edge-litert): {EXPORT_EXTRA}"
        ) from err
    return Interpreter


class _TFLiteRunner:
    """idx (B, T) -> logits (B, T, vocab) through one LiteRT interpreter, resized to each
    call's shape and re-allocated only when that shape changes."""

    def __init__(self, interpreter) -> None:
        self.interpreter = interpreter
        (self.input,) = interpreter.get_input_details()
        (self.output,) = interpreter.get_output_details()
        self.shape: tuple[int, ...] | None = None

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.ascontiguousarray(idx, dtype=self.input["dtype"])
        if idx.shape != self.shape:
            try:
                self.interpreter.resize_tensor_input(self.input["index"], idx.shape, strict=True)
            except (RuntimeError, ValueError) as err:
                fixed = tuple(int(n) for n in self.input["shape_signature"])
                raise ValueError(
                    f"this TFLite file takes idx of shape {fixed} (-1: any), not {idx.shape}"
                ) from err
            self.interpreter.allocate_tensors()
            self.shape = idx.shape
        self.interpreter.set_tensor(self.input["index"], idx)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])  # a copy


def tflite_model(
    path: str | os.PathLike[str], config: GPTConfig, threads: int = 1, name: str | None = None
) -> ExportedModel:
    """The TFLite GPT at `path` as an ExportedModel: idx (B, T) int -> float32 logits.

    Inputs are checked against `config` (T <= block_size, ids < vocab_size) before the
    interpreter sees them; `threads` is the interpreter's thread count. `name` defaults to
    "tflite fp32 (keras)", or "tflite int8 (keras)" if the file holds int8 tensors.
    """
    path = runner_file(path, config, threads, "TFLite")
    interpreter = _interpreter_class()(model_path=str(path), num_threads=threads)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0]["shape_signature"]) != 2:
        raise ValueError(
            f"{path} is not a GPT file: expected one input idx (B, T) and one output, got "
            f"{len(inputs)} input(s) and {len(outputs)} output(s)"
        )
    vocab = int(outputs[0]["shape_signature"][-1])
    if vocab != config.vocab_size:
        raise ValueError(
            f"{path} returns logits over {vocab} tokens, but config.vocab_size is "
            f"{config.vocab_size}: is the file for this config?"
        )
    quantized = any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details())
    return ExportedModel(
        _TFLiteRunner(interpreter),
        vocab_size=config.vocab_size,
        block_size=config.block_size,
        name=name or f"tflite {'int8' if quantized else 'fp32'} (keras)",
        path=path,
    )


def eager_model(model: GPT, name: str = "keras eager") -> ExportedModel:
    """The Keras GPT itself as an ExportedModel (numpy ids in, numpy logits out, inference
    mode): the reference that `course.export.verify` compares exports with."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a course.tf.GPT, got {type(model)}")

    def run(idx: np.ndarray) -> np.ndarray:
        return model(idx.astype(np.int32), training=False).numpy()

    config = model.config
    return ExportedModel(run, vocab_size=config.vocab_size, block_size=config.block_size, name=name)


# --------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------


def to_onnx(model: GPT, path: str | os.PathLike[str]) -> Path:
    """Write the GPT as an ONNX file with `model.export(format="onnx")`; returns its path.

    On the TensorFlow backend Keras 3 converts through the `tf2onnx` package: without it
    this raises ImportError saying so. The signature is idx int32 (B, T), both dynamic, and
    the attention is traced as in `to_tflite` (manual: the same function).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a course.tf.GPT, got {type(model)}")
    if importlib.util.find_spec("tf2onnx") is None:
        raise ImportError(
            "Keras -> ONNX needs tf2onnx (Keras 3 exports ONNX through it on the TensorFlow "
            "backend), and it is not installed: pip install 'twin-gpt[export]'. Or move the "
            "weights to PyTorch (course.tf.keras_to_torch) and export from there."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _manual_attention(model):
        model.export(
            str(path), format="onnx", input_signature=_input_signature(model), verbose=False
        )
    return path

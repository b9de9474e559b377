"""The PyTorch GPT as an ONNX file: export, int8 quantization, and runners to compare them.

    from course.export import size_on_disk, verify
    from course.torch.export import eager_model, onnx_model, quantize_int8, to_onnx
    path = to_onnx(model, "out/gpt.onnx")                  # logits for idx (B, T), T <= block
    int8 = quantize_int8(path, "out/gpt.int8.onnx")        # int8 weights, float activations
    fp32 = onnx_model(path, model.config)                  # an ExportedModel (onnxruntime)
    print(verify(fp32, eager_model(model), (x, y)))        # max |Δlogits|, argmax, val loss

The export traces `GPT.forward` with `torch.export` (the "dynamo" exporter): the batch and
the sequence length stay symbolic, so one file serves every B and every T up to block_size.
The graph has no input checks (the range of the ids is data, not shape, and the exporter
cannot branch on data): `ExportedModel` checks the ids before the runtime sees them.
onnx, onnxruntime and onnxscript come from the `export` extra; they are imported by the
functions that use them.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from course.config import GPTConfig
from course.export import (  # noqa: F401 (onnx_model, quantize_int8: this module's too)
    ONNX_INPUT,
    ONNX_OUTPUT,
    ExportedModel,
    onnx_model,
    quantize_int8,
)
from course.torch.devices import model_device

INPUT_NAME, OUTPUT_NAME = ONNX_INPUT, ONNX_OUTPUT


class _Logits(torch.nn.Module):
    """GPT.forward without targets, returning the logits alone: the one output to export."""

    def __init__(self, gpt: torch.nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits, _ = self.gpt(idx)
        return logits  # (B, T, vocab)


def _config(model) -> GPTConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, GPTConfig):
        raise TypeError(
            f"model must be a course.torch GPT (with a GPTConfig as .config), got "
            f"{type(model).__name__}"
        )
    return config


def to_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    dynamic: bool = True,
    opset: int | None = None,
    external_data: bool = False,
    debug_info: bool = False,
) -> Path:
    """Export `model`'s logits for idx (B, T) to an ONNX file at `path`; return the path.

    Input "idx" (int64), output "logits" (float32, (B, T, vocab)). With `dynamic` the batch
    and the length (1..block_size) are symbolic; without, the file takes (1, block_size)
    only. `opset` None lets torch choose. `external_data` keeps the weights in a
    `<name>.data` file beside it (needed past 2 GB). The exporter records each node's
    Python stack trace (this machine's paths) in the file: dropped unless `debug_info`.
    The model is exported in eval mode (no dropout) and its mode restored; the file is
    checked with `onnx.checker` before it is returned.
    """
    import onnx
    from torch.export import Dim

    config = _config(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    block, device = config.block_size, model_device(model)
    # Example sizes >= 2 (torch.export specializes sizes 0 and 1) and different from each
    # other, so that neither dimension is taken for the other.
    length = min(block, 7) if dynamic else block
    batch = 2 if dynamic else 1
    example = torch.zeros((batch, length), dtype=torch.long, device=device)
    shapes = None
    if dynamic:
        seq = Dim("seq", min=1, max=block) if block > 1 else None  # block 1: length is 1
        shapes = {INPUT_NAME: {0: Dim("batch", min=1), **({1: seq} if seq else {})}}
    was_training = model.training
    wrapper = _Logits(model).eval()  # eval() reaches the model inside too
    try:
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=shapes,
            dynamo=True,
            verbose=False,
        )
    finally:
        model.train(was_training)
    if not debug_info:
        for node in program.model.graph.all_nodes():
            node.metadata_props.clear()
    program.save(path, external_data=external_data)
    onnx.checker.check_model(str(path), full_check=True)  # by path: reads external data too
    return path


LITERT_TORCH_EXTRA = "pip install 'twin-gpt[litert-torch]'"


def to_tflite(model: torch.nn.Module, path: str | os.PathLike[str], *, int8: bool = False) -> Path:
    """Write `model`'s logits as a TFLite (LiteRT) file with Google's `litert-torch`
    converter, for idx of shape (1, block_size) int32 (the file's one shape: pad or crop
    a context to it); returns the path. fp32, or with `int8` its weights in int8 (one scale
    per output channel, activations in float: ai-edge-quantizer's dynamic_wi8_afp32, which
    litert-torch brings), like `course.tf.export.to_tflite(..., int8="dynamic")`.

    litert-torch is its own optional extra (it brings JAX and its own converters, and
    accepts torch < 2.15): without it this raises ImportError naming the extra, and the
    Keras twin of the model exports to TFLite with `course.tf.export.to_tflite`.
    """
    import importlib.util

    if not isinstance(int8, bool):
        raise TypeError(f"int8 must be True or False, got {int8!r}")
    needed = ("litert_torch", "ai_edge_quantizer")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"PyTorch -> TFLite needs litert-torch ({', '.join(missing)} not found): "
            f"{LITERT_TORCH_EXTRA}. Or export the Keras twin of the model "
            "(course.tf.convert.torch_to_keras, then course.tf.export.to_tflite), or use "
            "ONNX (to_onnx)"
        )
    import litert_torch

    config = _config(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, config.block_size), dtype=torch.long)
    was_training = model.training
    # Both tools print their progress (a line per stage) to stdout: kept out of the
    # caller's output; their errors are exceptions.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            edge = litert_torch.convert(_Logits(model).eval(), (example,))
        finally:
            model.train(was_training)
        if not int8:
            edge.export(str(path))
            return path
        from ai_edge_quantizer import quantizer, recipe

        with tempfile.TemporaryDirectory(prefix="tflite-fp32-") as tmp:
            fp32 = Path(tmp) / "fp32.tflite"
            edge.export(str(fp32))
            quant = quantizer.Quantizer(str(fp32))
            quant.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            result = quant.quantize()
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(result.quantized_model)
    partial.replace(path)  # a failed run leaves no half-written file at `path`
    return path


def eager_model(model: torch.nn.Module, name: str = "torch eager") -> ExportedModel:
    """The PyTorch model itself as an ExportedModel: numpy ids in, numpy logits out, run
    without gradients in eval mode (its mode restored after each call) on its device.
    The reference that `course.export.verify` compares exports with."""
    config = _config(model)

    def run(idx: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                ids = torch.from_numpy(idx).to(model_device(model))
                logits, _ = model(ids)
            return logits.float().cpu().numpy()
        finally:
            model.train(was_training)

    return ExportedModel(run, config.vocab_size, config.block_size, name)

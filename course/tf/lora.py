"""LoRA in Keras 3 (chapter 08): the mirror of `course.torch.lora`, same names and semantics.

A frozen Dense layer learns a low-rank update instead of a new kernel:

    y = x W + b + (alpha / r) * (dropout(x) A) B        A (in, r), B (r, out), W (in, out)

Keras keeps a Dense kernel as (in, out) where an nn.Linear weight is (out, in), so every
LoRA matrix here is the transpose of its PyTorch twin: A (in, r) is torch's lora_A.T and
B (r, out) torch's lora_B.T. A starts uniform in ±1/√in (PyTorch's kaiming-uniform with
a=√5, peft's init), B at zero, so the adapted model starts as the base model exactly.

    from course.tf.lora import apply_lora, merge_lora, save_adapter, load_adapter
    model = apply_lora(keras_gpt, r=8, alpha=16)      # every other variable frozen
    save_adapter(model, "adapter.safetensors")        # the file course.torch.lora writes

Adapter files are the PyTorch side's, byte for byte in layout: tensors named as in the
PyTorch GPT ("transformer.h.0.attn.c_attn.lora_A", (r, in)), metadata r, alpha, targets,
the GPTConfig and a fingerprint of the base weights computed on the PyTorch names and
layout (`course.tf.convert.keras_to_torch`), so an adapter trained in one framework loads
in the other: `course.adapters` writes, reads and checks the files for both. In memory,
`torch_adapter_to_keras` and `keras_adapter_to_torch` move one.

Keras 3's own LoRA, `Dense.enable_lora(rank, lora_alpha=None)`, computes the same update
with the same layout as here, and has traps worth knowing (keras 3.15, read from its source):

- layout: `lora_kernel_a` (in, rank), `lora_kernel_b` (rank, out): ours, and the transpose of
  peft's lora_A (r, in) / lora_B (out, r);
- scale: `lora_alpha / rank`, where `lora_alpha` defaults to `rank` (scale 1, not peft's
  usual 2 with alpha = 2r); A is initialised "he_uniform" (bound √6/√in, √6 times ours);
- the update is added to the kernel inside `Dense.kernel` (x (W + s A B)): no dropout;
- what stays trainable: only the kernel is frozen, the layer's bias still trains, and so
  does every layer it was not called on (embeddings, LayerNorms): freeze them yourself;
- `enable_lora` needs a built layer and works once per layer; saving (`save_weights`) stores
  the merged kernel x (W + s A B) and no A, B, and `load_weights` into a layer with LoRA
  enabled loads that kernel and sets A and B to zero: the adapter is no longer separable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from course import adapters, runtime
from course.adapters import DEFAULT_TARGETS, check_adapter_fits, read_adapter
from course.checks import check_int
from course.tf.convert import keras_to_torch, lora_assignments

keras = runtime.import_keras()  # TensorFlow backend, loaded safely beside Triton
ops = keras.ops


# --------------------------------------------------------------------------------------
# One adapted layer
# --------------------------------------------------------------------------------------


class LoRALinear(keras.layers.Layer):
    """A built keras.layers.Dense (kept as `.base`, frozen: kernel and bias) plus a
    trainable low-rank update A B.

    call(x) = base(x) + (dropout(x) @ A @ B) * scale, scale = alpha / r; dropout acts on the
    input of the LoRA path only. Once merged, call is base(x) alone. `kernel` and `bias`
    are the base layer's, so `course.tf.convert` moves the base weights unchanged.
    """

    def __init__(
        self,
        base,
        r: int = 8,
        alpha: float = 16,
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        if not isinstance(base, keras.layers.Dense):
            raise TypeError(f"base must be a keras.layers.Dense, got {type(base).__name__}")
        if not base.built:
            raise ValueError("base must be built (call it once, or build it) before LoRA")
        check_int("r", r, 1)
        super().__init__(name=kwargs.pop("name", base.name), **kwargs)
        self.base = base
        self.r, self.alpha = int(r), adapters.check_alpha(alpha)
        self.scale = self.alpha / self.r
        self.dropout = adapters.check_dropout(dropout)
        for variable in base.weights:  # kernel and bias (Keras' enable_lora leaves the bias)
            variable.trainable = False
        n_in, n_out = base.kernel.shape  # (in, out)
        bound = 1.0 / math.sqrt(n_in)  # kaiming-uniform(a=√5) on torch's (r, in): U(±1/√in)
        self.lora_A = self.add_weight(
            shape=(n_in, self.r),
            initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed),
            name="lora_A",
        )  # (in, r)
        self.lora_B = self.add_weight(shape=(self.r, n_out), initializer="zeros", name="lora_B")
        self.lora_dropout = keras.layers.Dropout(self.dropout, seed=seed) if self.dropout else None
        self.merged = False
        self.enabled = True  # False: call is base(x) alone (`disable_lora`)
        self.kernel_before_merge = None  # set while merged
        self.built = True

    @property
    def kernel(self):
        return self.base.kernel

    @property
    def bias(self):
        return self.base.bias

    def delta_kernel(self):
        """scale * A @ B: (in, out), what merging adds to the base kernel."""
        return ops.matmul(self.lora_A, self.lora_B) * self.scale

    def call(self, x, training=False):
        y = self.base(x)  # (..., out)
        if self.merged or not self.enabled:
            return y
        h = self.lora_dropout(x, training=training) if self.lora_dropout is not None else x
        h = ops.matmul(h, self.lora_A)  # (..., r)
        return y + ops.matmul(h, self.lora_B) * self.scale  # (..., out)

    def merge(self) -> None:
        """Add scale * A B to the base kernel. Merging a merged layer does nothing. The
        kernel before merging is kept until `unmerge` puts it back bit for bit (W + d - d
        is W only up to rounding), as on the PyTorch side."""
        if not self.merged:
            self.kernel_before_merge = ops.copy(self.base.kernel)
            self.base.kernel.assign(self.base.kernel + self.delta_kernel())
            self.merged = True

    def unmerge(self) -> None:
        """Put back the base kernel saved by `merge`, exactly. Unmerging a layer that is
        not merged does nothing."""
        if self.merged:
            self.base.kernel.assign(self.kernel_before_merge)
            self.kernel_before_merge = None
            self.merged = False


# --------------------------------------------------------------------------------------
# A whole model
# --------------------------------------------------------------------------------------


def _children(model) -> Iterator[tuple[str, Any, str, Any]]:
    """(PyTorch-style name, parent layer, attribute, layer) of every sub-layer of a Keras
    GPT, depth first: model.h[0].attn.c_attn is "transformer.h.0.attn.c_attn"."""
    seen = {id(model)}

    def walk(layer, prefix):
        for attribute, value in list(vars(layer).items()):
            if attribute.startswith("_"):
                continue
            items = enumerate(value) if isinstance(value, list | tuple) else [(None, value)]
            for index, child in items:
                if not isinstance(child, keras.layers.Layer) or id(child) in seen:
                    continue
                seen.add(id(child))
                name = f"{prefix}.{attribute}" + ("" if index is None else f".{index}")
                yield name, layer, attribute, child
                if not isinstance(child, LoRALinear):
                    yield from walk(child, name)

    yield from walk(model, "transformer")


def lora_layers(model) -> dict[str, LoRALinear]:
    """Every LoRALinear in `model`, by its PyTorch name ("transformer.h.0.attn.c_attn")."""
    return {name: layer for name, _, _, layer in _children(model) if isinstance(layer, LoRALinear)}


def _find_dense(model, targets: tuple[str, ...]) -> dict[str, tuple]:
    """PyTorch name -> (parent, attribute) of every Dense (or LoRALinear) whose attribute
    name is in `targets`; a target that names none is an error listing them."""
    found, dense_names = {}, set()
    for name, parent, attribute, layer in _children(model):
        if isinstance(layer, keras.layers.Dense | LoRALinear):
            dense_names.add(attribute)
            if attribute in targets:
                found[name] = (parent, attribute)
    unknown = [t for t in targets if t not in dense_names]
    if unknown:
        raise ValueError(
            f"targets {unknown} name no keras.layers.Dense in this model; its Dense layers "
            f"are {sorted(dense_names)} (the Keras GPT's head is the embedding matrix itself)"
        )
    return found


def apply_lora(
    model,
    targets: Iterable[str] | str = DEFAULT_TARGETS,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    seed: int | None = None,
):
    """Wrap every Dense whose attribute name is in `targets` in a LoRALinear, freeze every
    other variable (embeddings, LayerNorms, the Dense kernels and biases), return `model`.

    The mirror of `course.torch.lora.apply_lora`: the default targets adapt attn.c_attn,
    attn.c_proj, mlp.c_fc and mlp.c_proj of every block. Keras locks a built layer's
    sub-layers, so the new layer takes the old one's place in its parent's tracker (Keras'
    own `enable_lora` unlocks it the same way). Variables are frozen one by one
    (`variable.trainable = False`); `model.trainable_weights` is then the LoRA weights alone.
    """
    layers = lora_layers(model)
    targets = adapters.check_apply_arguments(targets, r, alpha, dropout, "Dense", layers)
    found = _find_dense(model, targets)
    for variable in model.weights:
        variable.trainable = False
    for parent, attribute in found.values():
        old = getattr(parent, attribute)
        with ExitStack() as scopes:  # variable paths beside the kernel's: .../c_attn/lora_A
            for part in old.kernel.path.split("/")[:-2]:
                scopes.enter_context(keras.name_scope(part))
            new = LoRALinear(old, r, alpha, dropout, seed=seed)
        parent._tracker.replace_tracked_value("layers", old, new)  # built layers are locked
        setattr(parent, attribute, new)
    return model


def merge_lora(model):
    """Fold every LoRA update into its base kernel (call then skips the LoRA path)."""
    for layer in _layers_or_error(model).values():
        layer.merge()
    return model


def unmerge_lora(model):
    """Take every merged LoRA update back out of its base kernel."""
    for layer in _layers_or_error(model).values():
        layer.unmerge()
    return model


@contextmanager
def disable_lora(model) -> Iterator[Any]:
    """Within the block, every LoRA layer computes its base layer alone: the model is the
    base model, to the bit. A merged model is refused. `enabled` is a Python flag, read
    when a function is traced: a tf.function traced before the block keeps the adapters
    on, so the traced evaluation step `course.tf.train.estimate_loss` caches on the model
    is dropped on entry and on exit (trace your own functions inside the block)."""
    with adapters.switched_off(lora_layers(model)):
        model.__dict__.pop("_eval_loss", None)
        try:
            yield model
        finally:
            model.__dict__.pop("_eval_loss", None)


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of the variables a Keras optimizer keeps per trained variable (AdamW: the
    first and second moments, the size of what it trains, twice), its counters left out."""
    return sum(
        math.prod(v.shape) * np.dtype(v.dtype).itemsize
        for v in optimizer.variables
        if len(v.shape) > 0
    )


def lora_parameters(model) -> list:
    """The LoRA variables (A and B of every adapted layer): what the optimizer should get."""
    return [v for layer in _layers_or_error(model).values() for v in (layer.lora_A, layer.lora_B)]


def count_trainable(model) -> int:
    """Numbers that receive gradients (model.trainable_weights, each once)."""
    return sum(math.prod(v.shape) for v in model.trainable_weights)


def _layers_or_error(model) -> dict[str, LoRALinear]:
    return adapters.require_layers(lora_layers(model))


# --------------------------------------------------------------------------------------
# Adapters between frameworks, and adapter files (the PyTorch side's format)
# --------------------------------------------------------------------------------------


def keras_adapter_to_torch(model, as_torch: bool = False) -> dict[str, Any]:
    """The LoRA weights in PyTorch names and layout: lora_A (r, in) = A.T, lora_B (out, r)
    = B.T; numpy arrays, or torch tensors with `as_torch` (load them into a PyTorch GPT
    with LoRA applied: `torch_model.load_state_dict(state, strict=False)`)."""
    _layers_or_error(model)
    state = keras_to_torch(model, as_torch=as_torch)
    return {name: value for name, value in state.items() if name.endswith((".lora_A", ".lora_B"))}


def torch_adapter_to_keras(state: Mapping[str, Any], model, source: str = "state"):
    """Load LoRA weights in PyTorch names and layout (tensors or arrays, e.g. from
    `course.torch.lora.adapter_state_dict`) into the Keras GPT's LoRA layers, transposed.
    Names and shapes are all checked before any variable changes."""
    _layers_or_error(model)
    for variable, value in lora_assignments(state, model, source):
        variable.assign(value)
    return model


def base_fingerprint(model) -> str:
    """sha256 of the base model's weights in PyTorch names and layout, sorted by name, as
    float32: the same number `course.torch.lora.base_fingerprint` gives the same weights."""
    return adapters.fingerprint(adapters.base_weights(keras_to_torch(model)))


def save_adapter(model, path) -> Path:
    """Write the model's LoRA weights to `path` (safetensors, atomically, PyTorch layout),
    with r, alpha, targets, the base model's config and fingerprint. Returns the path."""
    adapters.check_not_merged(lora_layers(model).values(), "save an adapter of")
    settings = adapters.lora_settings(lora_layers(model))
    fingerprint = base_fingerprint(model)
    tensors = keras_adapter_to_torch(model)
    return adapters.write_adapter(path, tensors, settings, model.config, fingerprint, "keras")


def load_adapter(model, path):
    """Load an adapter file written by `save_adapter` (either framework's) into `model`.

    A model without LoRA layers gets them first (apply_lora with the file's r, alpha and
    targets, and no dropout: to train on, apply_lora yourself first); one with LoRA layers
    must have the file's r, alpha and targets. The file must
    come from a model of the same config and the same base weights (its fingerprint).
    Everything is checked before any variable changes: a refused load changes nothing.
    """
    tensors, meta = read_adapter(path)
    adapters.check_not_merged(lora_layers(model).values(), "load an adapter into")
    check_adapter_fits(path, meta, model.config, base_fingerprint(model))
    if lora_layers(model):
        adapters.check_same_settings(path, meta, adapters.lora_settings(lora_layers(model)))
    sizes = {}  # name -> (in, out) of every Dense the file's targets name (kernel (in, out))
    for name, (parent, attribute) in _find_dense(model, meta["targets"]).items():
        sizes[name] = tuple(getattr(parent, attribute).kernel.shape)
    adapters.check_tensors_fit(path, tensors, meta["r"], sizes)
    if not lora_layers(model):
        apply_lora(model, meta["targets"], meta["r"], meta["alpha"])
    return torch_adapter_to_keras(tensors, model, source=f"adapter {str(path)!r}")

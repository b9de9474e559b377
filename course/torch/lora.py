"""LoRA in PyTorch (chapter 08): low-rank adapters on a frozen GPT, merged or not, saved alone.

A frozen Linear layer W (out, in) learns a low-rank update instead of a new W:

    y = W x + b + (alpha / r) * B (A dropout(x))        A (r, in), B (out, r), r << in, out

A starts random (kaiming-uniform, as `peft` and Microsoft's loralib do) and B at zero, so
the adapted model starts as the base model exactly and training moves only A and B:
r * (in + out) numbers per layer instead of in * out. `merge` folds (alpha / r) B A into W
(no extra cost at inference), `unmerge` gives W back bit for bit.

    from course.torch import apply_lora, load_adapter, load_model, lora_parameters, save_adapter
    base, tokenizer = load_model("out/shakespeare")  # a chapter 05 checkpoint
    model = apply_lora(base, r=8, alpha=16)           # every other weight frozen
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-3)   # ...train...
    save_adapter(model, "adapter.safetensors")        # the LoRA weights only: kB, not MB
    load_adapter(load_model("out/shakespeare")[0], "adapter.safetensors")  # that base only

The adapter file holds only the LoRA weights, in the PyTorch layout (A (r, in), B (out, r)),
named as in the model ("transformer.h.0.attn.c_attn.lora_A"), with metadata: r, alpha,
targets, the base model's GPTConfig (JSON) and a fingerprint of the base model's weights.
`course.adapters` writes, reads and checks them for both frameworks, so an adapter moves
between frameworks; this module converts its tensors to and from numpy at the edge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from course import adapters
from course.adapters import DEFAULT_TARGETS, check_adapter_fits, read_adapter
from course.checks import check_int, to_numpy
from course.config import GPTConfig

# --------------------------------------------------------------------------------------
# One adapted layer
# --------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """An nn.Linear (kept as `.base`, frozen) plus a trainable low-rank update B A.

    forward(x) = base(x) + (dropout(x) @ Aᵀ @ Bᵀ) * scale, scale = alpha / r. Dropout acts
    on the input of the LoRA path only (the base path sees x itself), as in peft. Once
    merged, forward is base(x) alone: the update is inside base.weight.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be a torch.nn.Linear, got {type(base).__name__}")
        check_int("r", r, 1)
        self.base = base
        self.r, self.alpha = int(r), adapters.check_alpha(alpha)
        self.scale = self.alpha / self.r
        self.dropout = adapters.check_dropout(dropout)
        for p in base.parameters():
            p.requires_grad_(False)
        weight = base.weight  # (out, in)
        factory = dict(device=weight.device, dtype=weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(self.r, base.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.r, **factory))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # U(±1/√in), peft's init
        self.lora_dropout = nn.Dropout(self.dropout) if self.dropout else nn.Identity()
        self.merged = False
        self.enabled = True  # False: forward is base(x) alone (`disable_lora`)
        self.weight_before_merge: torch.Tensor | None = None  # set while merged

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """scale * B @ A: (out, in), what merging adds to base.weight."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if self.merged or not self.enabled:
            return y
        h = self.lora_dropout(x) @ self.lora_A.t()  # (..., r)
        return y + (h @ self.lora_B.t()) * self.scale  # (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """Add scale * B A to base.weight. Merging a merged layer does nothing.

        The weight before merging is kept (a copy, not in the state dict) until `unmerge`
        puts it back: W + d - d is W only up to rounding, and the base weights must come
        back bit for bit (adapters off = the base model; the adapter file's fingerprint).
        """
        if not self.merged:
            self.weight_before_merge = self.base.weight.detach().clone()
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put back the base weight saved by `merge`, exactly. Unmerging a layer that is not
        merged does nothing."""
        if self.merged:
            self.base.weight.copy_(self.weight_before_merge)
            self.weight_before_merge = None
            self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha:g}, "
            f"scale={self.scale:g}, dropout={self.dropout:g}, merged={self.merged}"
        )


# --------------------------------------------------------------------------------------
# A whole model
# --------------------------------------------------------------------------------------


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRALinear in `model`, by its name in the model ("transformer.h.0.attn.c_attn")."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(
    model: nn.Module,
    targets: Iterable[str] | str = DEFAULT_TARGETS,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """Wrap every nn.Linear whose attribute name is in `targets` in a LoRALinear, freeze
    every other parameter (the tied wte / lm_head included), and return `model`.

    In `course.torch.GPT` the default targets adapt all four Linear layers of each block:
    attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj. A target that names no Linear layer
    is an error listing the ones there are; a model that already has LoRA layers is refused.
    """
    layers = lora_layers(model)
    targets = adapters.check_apply_arguments(targets, r, alpha, dropout, "Linear", layers)
    found = _find_linears(model, targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for parent, child_name in found.values():
        setattr(parent, child_name, LoRALinear(getattr(parent, child_name), r, alpha, dropout))
    return model


def _find_linears(model: nn.Module, targets: tuple[str, ...]) -> dict[str, tuple]:
    """name in model -> (parent module, attribute) of every Linear (or LoRALinear) whose
    attribute name is in `targets`; a target that names none is an error listing them."""
    found, linear_names = {}, set()
    for parent_name, parent in model.named_modules():
        if isinstance(parent, LoRALinear):
            continue  # its `base` is the Linear it adapts, already counted
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear | LoRALinear):
                linear_names.add(child_name)
                if child_name in targets:
                    found[f"{parent_name}.{child_name}".lstrip(".")] = (parent, child_name)
    unknown = [t for t in targets if t not in linear_names]
    if unknown:
        raise ValueError(
            f"targets {unknown} name no nn.Linear in this model; its Linear layers are "
            f"{sorted(linear_names)}"
        )
    return found


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (forward then skips the LoRA path)."""
    for layer in _layers_or_error(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every merged LoRA update back out of its base weight."""
    for layer in _layers_or_error(model).values():
        layer.unmerge()
    return model


@contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every LoRA layer computes its base layer alone: the model is the
    base model, to the bit (the base weights never change while adapters train). A merged
    model is refused: its base weights hold the update."""
    with adapters.switched_off(lora_layers(model)):
        yield model


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor an optimizer keeps per parameter (AdamW: exp_avg and
    exp_avg_sq, the size of what it trains, twice; its step counters)."""
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA weights (A and B of every adapted layer): what the optimizer should get."""
    return [p for layer in _layers_or_error(model).values() for p in (layer.lora_A, layer.lora_B)]


def count_trainable(model: nn.Module) -> int:
    """Numbers that receive gradients (each shared parameter once, as model.parameters())."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _layers_or_error(model: nn.Module) -> dict[str, LoRALinear]:
    return adapters.require_layers(lora_layers(model))


# --------------------------------------------------------------------------------------
# Adapter files: the LoRA weights alone, tied to the base model they were trained on
# --------------------------------------------------------------------------------------


def base_fingerprint(model: nn.Module) -> str:
    """sha256 of the base model's weights: every non-LoRA tensor of the state dict, under
    its plain GPT name (a LoRALinear's "base." left out), sorted by name, as float32.

    The same weights give the same fingerprint with or without LoRA layers, and in Keras
    (`course.tf.lora.base_fingerprint` hashes the same names, values and layout). A merged
    model's weights are not the base's: unmerge first.
    """
    state = adapters.base_weights(model.state_dict())
    return adapters.fingerprint({name: to_numpy(value) for name, value in state.items()})


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights by name ("transformer.h.0.attn.c_attn.lora_A" (r, in), "...lora_B"
    (out, r)): the tensors an adapter file holds."""
    state = {}
    for name, layer in _layers_or_error(model).items():
        state[f"{name}.lora_A"] = layer.lora_A.detach()
        state[f"{name}.lora_B"] = layer.lora_B.detach()
    return state


def save_adapter(model: nn.Module, path) -> Path:
    """Write the model's LoRA weights to `path` (safetensors, atomically), with r, alpha,
    targets, the base model's config and fingerprint in the metadata. Returns the path."""
    adapters.check_not_merged(lora_layers(model).values(), "save an adapter of")
    settings = adapters.lora_settings(lora_layers(model))
    config, fingerprint = _config(model), base_fingerprint(model)
    tensors = {k: to_numpy(v) for k, v in adapter_state_dict(model).items()}
    return adapters.write_adapter(path, tensors, settings, config, fingerprint, "torch")


def _config(model: nn.Module) -> GPTConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, GPTConfig):
        raise TypeError(
            f"adapter files belong to a course GPT (model.config a GPTConfig); "
            f"{type(model).__name__} has config {config!r}"
        )
    return config


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Load an adapter file written by `save_adapter` (either framework's) into `model`.

    A model without LoRA layers gets them first (apply_lora with the file's r, alpha and
    targets, and no dropout: to train on, apply_lora yourself first); one with LoRA layers
    must have the file's r, alpha and targets. The file must
    come from a model of the same config and the same base weights (its fingerprint).
    Everything is checked before any weight changes: a refused load changes nothing.
    """
    tensors, meta = read_adapter(path)
    adapters.check_not_merged(lora_layers(model).values(), "load an adapter into")
    check_adapter_fits(path, meta, _config(model), base_fingerprint(model))
    if lora_layers(model):
        adapters.check_same_settings(path, meta, adapters.lora_settings(lora_layers(model)))
    sizes = {}  # name -> (in, out) of every Linear the file's targets name
    for name, (parent, attribute) in _find_linears(model, meta["targets"]).items():
        layer = getattr(parent, attribute)
        sizes[name] = (layer.in_features, layer.out_features)
    adapters.check_tensors_fit(path, tensors, meta["r"], sizes)
    if not lora_layers(model):
        apply_lora(model, meta["targets"], meta["r"], meta["alpha"])
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            for which in "AB":
                param = getattr(layer, f"lora_{which}")
                param.copy_(torch.from_numpy(np.array(tensors[f"{name}.lora_{which}"])))
    return model

"""Weights between the PyTorch GPT and the Keras GPT, both ways, with one name table.

    from course.tf.convert import torch_to_keras, keras_to_torch
    torch_to_keras(torch_model.state_dict(), keras_model)   # PyTorch -> Keras, in place
    torch_model.load_state_dict(keras_to_torch(keras_model, as_torch=True))  # and back

The table `weight_pairs(config)` lists (PyTorch name, Keras sub-layer path, attribute,
transpose?) for every weight. Only two things differ: an nn.Linear weight is (out, in)
while a Dense kernel is (in, out), so those are transposed; and the PyTorch state dict
lists the tied lm_head.weight, which on the Keras side is the token embedding itself.
Arrays cross as numpy, so this module needs neither framework to be imported by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from course.config import GPTConfig

_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_NORMS = ("ln_1", "ln_2")


def weight_pairs(config: GPTConfig) -> Iterator[tuple[str, str, str, bool]]:
    """(torch name, keras layer path, keras attribute, transpose) for every weight."""
    yield "transformer.wte.weight", "wte", "embeddings", False
    yield "transformer.wpe.weight", "wpe", "embeddings", False
    for i in range(config.n_layer):
        for norm in _NORMS:
            yield f"transformer.h.{i}.{norm}.weight", f"h_{i}/{norm}", "gamma", False
            if config.bias:
                yield f"transformer.h.{i}.{norm}.bias", f"h_{i}/{norm}", "beta", False
        for linear in _LINEARS:
            path = f"h_{i}/" + linear.replace(".", "/")
            yield f"transformer.h.{i}.{linear}.weight", path, "kernel", True
            if config.bias:
                yield f"transformer.h.{i}.{linear}.bias", path, "bias", False
    yield "transformer.ln_f.weight", "ln_f", "gamma", False
    if config.bias:
        yield "transformer.ln_f.bias", "ln_f", "beta", False


def _sublayer(model, path: str):
    layer = model
    for part in path.split("/"):
        if part.startswith("h_") and part[2:].isdigit():
            layer = layer.h[int(part[2:])]
        else:
            layer = getattr(layer, part)
    return layer


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _adapted(model) -> dict[str, Any]:
    """PyTorch name ("transformer.h.0.attn.c_attn") -> Keras layer, for every Dense of the
    model that carries LoRA weights (a `course.tf.lora.LoRALinear`: it has `lora_A`)."""
    found = {}
    for i in range(model.config.n_layer):
        for linear in _LINEARS:
            layer = _sublayer(model, f"h_{i}/" + linear.replace(".", "/"))
            if hasattr(layer, "lora_A"):
                found[f"transformer.h.{i}.{linear}"] = layer
    return found


def lora_assignments(
    state: Mapping[str, Any], model, source: str = "state dict"
) -> list[tuple[Any, np.ndarray]]:
    """(Keras variable, value) for the LoRA weights in `state` (PyTorch names and layout:
    "....c_attn.lora_A" (r, in), "....lora_B" (out, r)), transposed for the Keras GPT's LoRA
    layers (A (in, r), B (r, out)). The names must be exactly those of the model's LoRA
    layers and every shape must fit; nothing is assigned here."""
    adapted = _adapted(model)
    expected = {f"{prefix}.lora_{w}": (getattr(layer, f"lora_{w}"))
                for prefix, layer in adapted.items() for w in "AB"}  # fmt: skip
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{source} does not fit this model's LoRA layers: missing {missing[:4]}, "
            f"unexpected {extra[:4]} (apply_lora with the same targets and r first)"
        )
    assignments = []
    for name, variable in expected.items():
        value = _as_numpy(state[name])
        if value.shape[::-1] != tuple(variable.shape):
            raise ValueError(
                f"{source}: {name} has shape {value.shape}, this model needs "
                f"{tuple(variable.shape)[::-1]} (PyTorch layout)"
            )
        assignments.append((variable, value.T))
    return assignments


def _is_lora(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B"))


def torch_to_keras(state_dict: Mapping[str, Any], model) -> Any:
    """Load a PyTorch GPT state dict (tensors or arrays) into the Keras GPT `model`.

    A state dict of a PyTorch GPT with LoRA applied (`course.torch.lora`: base weights
    under "....c_attn.base.weight", and lora_A / lora_B) loads into a Keras GPT with the
    same LoRA layers (`course.tf.lora.apply_lora`), its A and B transposed; a plain state
    dict loads the base weights of an adapted Keras GPT and leaves its A and B alone.
    Every name and shape is checked before any variable changes."""
    lora = {name: value for name, value in state_dict.items() if _is_lora(name)}
    plain = {name.replace(".base.", "."): value for name, value in state_dict.items()
             if not _is_lora(name)}  # fmt: skip
    pairs = list(weight_pairs(model.config))
    expected = {name for name, *_ in pairs} | {"lm_head.weight"}
    missing = sorted(expected - set(plain))
    extra = sorted(set(plain) - expected)
    if missing or extra:
        raise ValueError(
            f"state dict does not fit this Keras GPT's config: missing {missing[:5]}, "
            f"unexpected {extra[:5]} (do n_layer and bias agree?)"
        )
    assignments = []
    for name, path, attribute, transpose in pairs:
        value = _as_numpy(plain[name])
        value = value.T if transpose else value
        variable = getattr(_sublayer(model, path), attribute)
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"{name}: shape {value.shape} does not fit Keras {path}/{attribute} "
                f"{tuple(variable.shape)}"
            )
        assignments.append((variable, value))
    if lora or not _adapted(model):
        assignments += lora_assignments(lora, model)
    for variable, value in assignments:
        variable.assign(value)
    return model


def keras_to_torch(model, as_torch: bool = False) -> dict[str, Any]:
    """The Keras GPT's weights as a PyTorch state dict (numpy arrays, or tensors).

    For a Keras GPT with LoRA layers, the state dict of the PyTorch GPT with the same LoRA
    layers: an adapted layer's weights under "....base.weight" / "....base.bias", and its
    lora_A (r, in) = A.T and lora_B (out, r) = B.T."""
    adapted = _adapted(model)
    state = {}
    for name, path, attribute, transpose in weight_pairs(model.config):
        value = np.asarray(getattr(_sublayer(model, path), attribute).numpy())
        prefix, _, leaf = name.rpartition(".")
        if prefix in adapted:  # its kernel and bias are the base layer's
            name = f"{prefix}.base.{leaf}"
        state[name] = np.ascontiguousarray(value.T if transpose else value)
    for prefix, layer in adapted.items():
        for w in "AB":
            value = np.asarray(getattr(layer, f"lora_{w}").numpy())
            state[f"{prefix}.lora_{w}"] = np.ascontiguousarray(value.T)
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied
    if as_torch:
        import torch

        state = {name: torch.from_numpy(value.copy()) for name, value in state.items()}
    return state

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


def torch_to_keras(state_dict: Mapping[str, Any], model) -> Any:
    """Load a PyTorch GPT state dict (tensors or arrays) into the Keras GPT `model`."""
    pairs = list(weight_pairs(model.config))
    expected = {name for name, *_ in pairs} | {"lm_head.weight"}
    missing = sorted(expected - set(state_dict))
    extra = sorted(set(state_dict) - expected)
    if missing or extra:
        raise ValueError(
            f"state dict does not fit this Keras GPT's config: missing {missing[:5]}, "
            f"unexpected {extra[:5]} (do n_layer and bias agree?)"
        )
    for name, path, attribute, transpose in pairs:
        value = _as_numpy(state_dict[name])
        value = value.T if transpose else value
        variable = getattr(_sublayer(model, path), attribute)
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"{name}: shape {value.shape} does not fit Keras {path}/{attribute} "
                f"{tuple(variable.shape)}"
            )
        variable.assign(value)
    return model


def keras_to_torch(model, as_torch: bool = False) -> dict[str, Any]:
    """The Keras GPT's weights as a PyTorch state dict (numpy arrays, or tensors)."""
    state = {}
    for name, path, attribute, transpose in weight_pairs(model.config):
        value = np.asarray(getattr(_sublayer(model, path), attribute).numpy())
        state[name] = np.ascontiguousarray(value.T if transpose else value)
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied
    if as_torch:
        import torch

        state = {name: torch.from_numpy(value.copy()) for name, value in state.items()}
    return state

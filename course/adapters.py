"""LoRA adapter files and arguments (chapter 08): the part both frameworks share.

`course.torch.lora` and `course.tf.lora` adapt their GPTs each in their own idiom; what an
adapter *is* lives here once, so that both write and read the same files and refuse the
same mistakes with the same words:

- the arguments: `targets` (names of the layers to adapt), `r` (an int >= 1), `alpha`
  (> 0, the update is scaled by alpha / r), `dropout` (in [0, 1)), LoRA applied once;
- the file: safetensors, the LoRA weights alone in PyTorch names and layout
  ("transformer.h.0.attn.c_attn.lora_A" (r, in), "...lora_B" (out, r)), with metadata
  format, framework, r, alpha, targets, the base model's GPTConfig (JSON) and a
  fingerprint of the base weights (`fingerprint`);
- the checks before a load: a missing, truncated or corrupt file, another model shape,
  other base weights, another r, alpha or targets, missing or misshapen tensors.

Each framework converts its tensors to numpy at its edge (Keras' A (in, r) is transposed
to (r, in) first). Framework-neutral: numpy, safetensors' numpy API, the course core;
never torch or tensorflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from course.checks import check_int
from course.config import GPTConfig
from course.files import write_bytes

DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")  # every Linear/Dense of a block (c_proj: 2)
ADAPTER_FORMAT = "twin-gpt-lora/1"  # metadata "format": what wrote the file, and its version
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")


# --------------------------------------------------------------------------------------
# Arguments and LoRA layers (any object with .r, .alpha and .merged)
# --------------------------------------------------------------------------------------


def check_alpha(alpha) -> float:
    """`alpha` as a float, or an error naming it: a real number > 0, not a bool."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__} {alpha!r}")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be > 0 (the update is scaled by alpha / r), got {alpha}")
    return float(alpha)


def check_dropout(dropout) -> float:
    """`dropout` as a float, or an error naming it: a real number in [0, 1), not a bool."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__} {dropout!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be >= 0 and < 1, got {dropout}")
    return float(dropout)


def check_targets(targets, layer_kind: str) -> tuple[str, ...]:
    """`targets` (one name or several) as a tuple of non-empty names; `layer_kind` ("Linear",
    "Dense") says in the error what the names name."""
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(
            f"targets must be a non-empty sequence of {layer_kind} layer names such as "
            f"{DEFAULT_TARGETS}, got {targets!r}"
        )
    return targets


def check_apply_arguments(
    targets, r, alpha, dropout, layer_kind: str, layers: Mapping[str, Any]
) -> tuple[str, ...]:
    """apply_lora's arguments checked, in order, before anything changes; `layers` are the
    model's LoRA layers already there (refused: LoRA is applied once). Returns `targets`
    as a tuple (`check_targets`)."""
    targets = check_targets(targets, layer_kind)
    check_int("r", r, 1)
    check_alpha(alpha)
    check_dropout(dropout)
    if layers:
        raise ValueError(
            "model already has LoRA layers: apply_lora once (merge_lora / unmerge_lora "
            "switch them; load_adapter loads other LoRA weights into them)"
        )
    return targets


def require_layers(layers: Mapping[str, Any]) -> Mapping[str, Any]:
    """`layers` (a model's LoRA layers by name), or an error if there are none."""
    if not layers:
        raise ValueError("model has no LoRA layers: call apply_lora(model, ...) first")
    return layers


def lora_settings(layers: Mapping[str, Any]) -> dict:
    """r, alpha and targets (sorted attribute names) of a model's LoRA layers, by name: one
    value each, or an error."""
    layers = require_layers(layers)
    ranks = {layer.r for layer in layers.values()}
    alphas = {layer.alpha for layer in layers.values()}
    if len(ranks) > 1 or len(alphas) > 1:
        raise ValueError(f"LoRA layers differ in rank {ranks} or alpha {alphas}: one of each")
    targets = sorted({name.rsplit(".", 1)[-1] for name in layers})
    return {"r": ranks.pop(), "alpha": alphas.pop(), "targets": targets}


def check_not_merged(layers: Iterable[Any], action: str) -> None:
    """Refuse to `action` ("save an adapter of") a model whose LoRA layers are merged."""
    if any(layer.merged for layer in layers):
        raise ValueError(
            f"cannot {action} a merged model: its weights hold the update, not the base "
            "model's; call unmerge_lora(model) first"
        )


@contextmanager
def switched_off(layers: Mapping[str, Any]) -> Iterator[None]:
    """Within the block, every LoRA layer of `layers` (lora_layers' dict, not empty) has
    `enabled = False` and computes its base layer alone; each is switched on again after
    the block, whatever happens in it. Merged layers are refused: their base holds the
    update."""
    layers = list(require_layers(layers).values())
    check_not_merged(layers, "disable the adapters of")
    for layer in layers:
        layer.enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.enabled = True


# --------------------------------------------------------------------------------------
# Adapter files
# --------------------------------------------------------------------------------------


def base_weights(state: Mapping[str, Any]) -> dict[str, Any]:
    """The base model's weights in a PyTorch GPT state dict with or without LoRA layers:
    the LoRA weights left out, an adapted layer's "....base.weight" under its plain name."""
    return {
        name.replace(".base.", "."): value
        for name, value in state.items()
        if not name.endswith((".lora_A", ".lora_B"))
    }


def fingerprint(state: Mapping[str, Any]) -> str:
    """sha256 of base weights given in PyTorch names and layout (name -> array): sorted by
    name, each as float32, its name and shape hashed before its bytes. Both frameworks
    hash the same names and values, so the same weights give the same fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = np.ascontiguousarray(state[name], dtype=np.float32)
        digest.update(f"{name}:{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def write_adapter(
    path,
    tensors: Mapping[str, np.ndarray],
    settings: dict,
    config: GPTConfig,
    base_fingerprint: str,
    framework: str,
) -> Path:
    """Write LoRA weights (numpy, PyTorch names and layout) to `path` (safetensors,
    atomically) with the metadata of an adapter file; `settings` is `lora_settings`'s,
    `framework` ("torch", "keras") the writer's. Returns the path."""
    from safetensors.numpy import save

    metadata = {
        "format": ADAPTER_FORMAT,
        "framework": framework,
        "r": str(settings["r"]),
        "alpha": repr(settings["alpha"]),
        "targets": json.dumps(settings["targets"]),
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "fingerprint": base_fingerprint,
    }
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    return write_bytes(path, save(arrays, metadata=metadata))


def read_adapter(path) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors (numpy, PyTorch layout) and metadata (r, alpha, targets, config,
    fingerprint, framework, parsed) of an adapter file, all read before anything is used.
    A missing, truncated or corrupt file, or one that is not an adapter, is an error
    naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"adapter file {str(path)!r} does not exist") from None
    try:
        tensors = load(data)
        header_size = int.from_bytes(data[:8], "little")
        raw = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    except (SafetensorError, ValueError) as err:
        raise ValueError(
            f"adapter file {str(path)!r} is not a readable safetensors file (truncated or "
            f"corrupt?): {err}"
        ) from None
    if raw.get("format") != ADAPTER_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a Twin GPT LoRA adapter (metadata format "
            f"{raw.get('format')!r}, expected {ADAPTER_FORMAT!r}); write one with save_adapter"
        )
    try:
        metadata = {
            "r": int(raw["r"]),
            "alpha": float(raw["alpha"]),
            "targets": tuple(json.loads(raw["targets"])),
            "config": GPTConfig.from_dict(json.loads(raw["config"])),
            "fingerprint": raw["fingerprint"],
            "framework": raw.get("framework", "?"),
        }
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"adapter file {str(path)!r} has broken metadata: {err!r}") from None
    return tensors, metadata


def check_adapter_fits(path, metadata: dict, config: GPTConfig, fingerprint: str) -> None:
    """Refuse an adapter trained on another shape of model or on other base weights. Only
    the fields that shape the weights must agree: dropout and attn_impl may differ."""
    theirs, ours = metadata["config"].to_dict(), config.to_dict()
    differ = {k: (theirs[k], ours[k]) for k in SHAPE_FIELDS if theirs[k] != ours[k]}
    if differ:
        raise ValueError(
            f"adapter {str(path)!r} was trained on another model shape: (adapter's, this "
            f"model's) {differ}"
        )
    if metadata["fingerprint"] != fingerprint:
        raise ValueError(
            f"adapter {str(path)!r} was trained on other base weights (fingerprint "
            f"{metadata['fingerprint'][:12]}..., this model's {fingerprint[:12]}...): load the "
            "checkpoint it was trained from"
        )


def check_same_settings(path, metadata: dict, settings: dict) -> None:
    """Refuse an adapter whose r, alpha or targets differ from those of the model's LoRA
    layers (`settings`, from `lora_settings`)."""
    theirs = {"r": metadata["r"], "alpha": metadata["alpha"]}
    theirs["targets"] = sorted(metadata["targets"])
    for key in ("r", "alpha", "targets"):
        if theirs[key] != settings[key]:
            raise ValueError(
                f"adapter {str(path)!r} has {key}={theirs[key]!r} but this model's LoRA "
                f"layers have {key}={settings[key]!r}"
            )


def check_tensors_fit(
    path, tensors: Mapping[str, np.ndarray], r: int, sizes: Mapping[str, tuple[int, int]]
) -> None:
    """Refuse an adapter whose tensors are not exactly lora_A (r, in) and lora_B (out, r)
    of every layer in `sizes` (name in the model -> (in, out) of the layer it adapts)."""
    expected = {}  # tensor name -> shape, PyTorch layout
    for name, (n_in, n_out) in sizes.items():
        expected[f"{name}.lora_A"] = (r, n_in)
        expected[f"{name}.lora_B"] = (n_out, r)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(
            f"adapter {str(path)!r} does not fit this model: missing {missing[:4]}, "
            f"unexpected {extra[:4]}"
        )
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise ValueError(
                f"adapter {str(path)!r}: {name} has shape {tensors[name].shape}, this model "
                f"needs {shape}"
            )


# --- Fine-tuning runs (`python -m course.train --init-from DIR --lora-r R`) ----------------

ADAPTER_FILE = "adapter.safetensors"  # a LoRA run's adapter, beside its checkpoint


def run_lora(train_config) -> dict | None:
    """apply_lora's settings for a run of `train_config` (a TrainConfig), or None when
    the run trains every weight (lora_r = 0)."""
    if not train_config.lora_r:
        return None
    return {"r": train_config.lora_r, "alpha": train_config.lora_alpha}


def check_fine_tuning_base(state: Mapping[str, Any], config: GPTConfig, where) -> None:
    """Refuse, with the reason, to start a run shaped by `config` from the checkpoint state
    `state` of the run in `where`: a LoRA run (fine-tune from its own base), or a model
    of another shape."""
    if state.get("lora"):
        raise ValueError(
            f"{where} is a LoRA run: fine-tune from the run it started from, or merge its "
            "adapter into the model (merge_lora) and save that as a run of its own"
        )
    base = GPTConfig.from_dict(state["model_config"])
    differ = [f"{f}: {getattr(base, f)} vs {getattr(config, f)}" for f in SHAPE_FIELDS
              if getattr(base, f) != getattr(config, f)]  # fmt: skip
    if differ:
        raise ValueError(
            f"the run in {where} has another model shape than the preset's "
            f"({'; '.join(differ)}): fine-tune with the preset it was trained with"
        )


def check_resumed_lora(state: Mapping[str, Any], lora: dict | None) -> None:
    """A run resumes with the LoRA settings it was started with, or not at all."""
    if state.get("lora") != lora:
        raise ValueError(
            f"the checkpoint's LoRA settings {state.get('lora')} differ from the preset's "
            f"{lora}: resume with the settings it was trained with"
        )

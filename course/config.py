"""What a GPT is (GPTConfig), how to train it (TrainConfig), and named recipes (PRESETS).

Framework-neutral: `course.torch` and `course.tf` build the same model from the same
`GPTConfig`, and train it with the same `TrainConfig` and the same learning-rate schedule
(`lr_at`). Both dataclasses are frozen and check themselves when created, so a bad value
fails where it is written, with a message that names it, rather than deep inside a model.

    from course.config import get_preset
    preset = get_preset("shakespeare-char-cpu")
    preset.model.n_embd, preset.train.max_iters         # 128, 2000
    get_preset("nano", {"max_iters": "50"}).train        # overrides, e.g. from the CLI
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from course.checks import check_int

ATTN_IMPLS = ("manual", "sdpa", "triton")
OPTIMIZERS = ("adamw", "muon")
TOKENIZERS = ("char", "bpe")


def _check_float(name: str, value: Any, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{upper}, got {value}")


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT. Names follow GPT-2 (and nanoGPT), so configs read the same."""

    n_layer: int = 4  # Transformer blocks; 4 is the smallest that samples readable Shakespeare
    n_head: int = 4  # attention heads per block; head size = n_embd // n_head
    n_embd: int = 128  # width of the residual stream
    block_size: int = 64  # longest context the model sees (learned positions 0..block_size-1)
    vocab_size: int = 65  # Tiny Shakespeare's character vocabulary (chapter 03)
    dropout: float = 0.0  # small data, short runs: dropout only slows the loss down
    bias: bool = False  # no biases in Linear/LayerNorm: slightly better and faster (nanoGPT)
    attn_impl: str = "sdpa"  # "manual" teaches, "sdpa" is fused and fast, "triton" is ch07
    layer_norm_eps: float = 1e-5  # GPT-2's epsilon: needed to reproduce its logits exactly

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            check_int(name, getattr(self, name), 1)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): each "
                f"head gets n_embd // n_head features; try n_embd={self.n_head * 32} or a "
                f"n_head that divides {self.n_embd}"
            )
        _check_float("dropout", self.dropout, 0.0, 1.0)
        if self.dropout >= 1.0:
            raise ValueError(f"dropout must be < 1.0 (1.0 drops everything), got {self.dropout}")
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be True or False, got {self.bias!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        _check_float("layer_norm_eps", self.layer_norm_eps, 0.0)

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        return _from_dict(cls, values)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the optimizer, the schedule, evaluation, and the data it reads."""

    batch_size: int = 12  # sequences per step; 12 x 64 tokens keeps a CPU step near 40 ms
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = product)
    max_iters: int = 2000  # optimizer steps
    learning_rate: float = 1e-3  # peak lr: small models tolerate a large one
    min_lr: float = 1e-4  # lr at the end of the cosine (learning_rate / 10, Chinchilla)
    warmup_iters: int = 100  # linear warm-up from ~0: Adam's early estimates are noisy
    lr_decay_iters: int = 2000  # the cosine ends here (usually = max_iters)
    weight_decay: float = 0.1  # on matrices only; never on biases, LayerNorms, embeddings' 1-D
    beta1: float = 0.9  # AdamW momentum
    beta2: float = 0.99  # > GPT-2's 0.95: few tokens per step, so average over more steps
    grad_clip: float = 1.0  # clip the global grad norm; 0 turns clipping off
    eval_interval: int = 250  # steps between evaluations (and checkpoints)
    eval_iters: int = 20  # batches per split per evaluation: a cheap, noisy estimate
    log_interval: int = 10  # steps between metrics-log lines
    seed: int = 1337  # model init and batch order; same seed, same run
    tokenizer: str = "char"  # "char" (vocab 65) or "bpe" (chapter 03's byte-level BPE)
    val_fraction: float = 0.1  # last 10% of the corpus text is validation (chapter 03's split)
    compile: bool = False  # torch.compile: 30-50 s to compile on 2 cores, little gain here
    threads: int = 0  # intra-op threads (course.runtime.set_threads); 0 = one per usable core
    lora_r: int = 0  # LoRA rank when fine-tuning (chapter 08); 0 trains every weight instead
    lora_alpha: float = 16.0  # LoRA's update is scaled by lora_alpha / lora_r (peft's default 16)
    optimizer: str = "adamw"  # or "muon": Muon for the blocks' matrices, AdamW for the rest
    time_budget_s: float = 0.0  # > 0: stop after this many seconds of training (evaluation
    # excluded) or max_iters steps, whichever comes first; the cosine follows the time used
    full_val: bool = False  # at the end, the loss on the whole validation split (every
    # target once) as metrics["full_val_loss"], beside the sampled estimate

    def __post_init__(self) -> None:
        for name, minimum in (
            ("batch_size", 1),
            ("grad_accum", 1),
            ("max_iters", 0),
            ("warmup_iters", 0),
            ("lr_decay_iters", 1),
            ("eval_interval", 1),
            ("eval_iters", 1),
            ("log_interval", 1),
            ("seed", 0),
            ("threads", 0),
            ("lora_r", 0),
        ):
            check_int(name, getattr(self, name), minimum)
        _check_float("learning_rate", self.learning_rate, 0.0)
        _check_float("min_lr", self.min_lr, 0.0)
        if self.min_lr > self.learning_rate:
            raise ValueError(
                f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})"
            )
        _check_float("weight_decay", self.weight_decay, 0.0)
        _check_float("beta1", self.beta1, 0.0, 1.0)
        _check_float("beta2", self.beta2, 0.0, 1.0)
        _check_float("grad_clip", self.grad_clip, 0.0)
        _check_float("lora_alpha", self.lora_alpha, 0.0)
        _check_float("time_budget_s", self.time_budget_s, 0.0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _check_float("val_fraction", self.val_fraction, 0.0, 1.0)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"val_fraction must be > 0 and < 1 (train and val both need text), "
                f"got {self.val_fraction}"
            )
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        for name in ("compile", "full_val"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, values)


def _from_dict(cls, values: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def lr_at(step: int, train: TrainConfig, progress: float | None = None) -> float:
    """The learning rate for optimizer step `step` (0-based): warm-up, cosine, then flat.

    Linear warm-up over `warmup_iters` steps (step 0 gets learning_rate / warmup_iters, not
    0, so the first step already learns), then a cosine from learning_rate down to min_lr at
    `lr_decay_iters`, then min_lr. Both frameworks call this one function.

    A run with a time budget passes `progress`, the fraction of the budget used so far
    (0..1): after the warm-up the cosine follows it instead of the step count, so the rate
    reaches min_lr when the time runs out, however many steps that took.
    """
    if step < train.warmup_iters:
        return train.learning_rate * (step + 1) / train.warmup_iters
    if progress is not None:
        position = min(max(float(progress), 0.0), 1.0)
    else:
        if step >= train.lr_decay_iters:
            return train.min_lr
        span = train.lr_decay_iters - train.warmup_iters
        if span <= 0:  # the warm-up already reaches the end of the decay
            return train.min_lr
        position = (step - train.warmup_iters) / span
    cosine = 0.5 * (1.0 + math.cos(math.pi * position))  # 1 -> 0
    return train.min_lr + cosine * (train.learning_rate - train.min_lr)


@dataclass(frozen=True)
class Preset:
    """A named recipe: a model, how to train it, and one line on what it is for."""

    name: str
    model: GPTConfig
    train: TrainConfig
    about: str = field(default="", compare=False)


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "nano",
            GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32),
            TrainConfig(
                batch_size=8,
                max_iters=300,
                warmup_iters=20,
                lr_decay_iters=300,
                eval_interval=100,
                eval_iters=5,
            ),
            "seconds on a CPU: tests, smoke runs and first experiments",
        ),
        Preset(
            "shakespeare-char-cpu",
            GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64),
            TrainConfig(),
            "nanoGPT's CPU recipe for Tiny Shakespeare: ~2 min here, val loss ~1.88",
        ),
        Preset(
            "shakespeare-char",
            GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
            TrainConfig(
                batch_size=64,
                max_iters=5000,
                lr_decay_iters=5000,
                eval_interval=250,
                eval_iters=200,
            ),
            "nanoGPT's GPU recipe (10.7M parameters): val loss ~1.47; hours on a CPU",
        ),
        Preset(
            "gpt2",
            GPTConfig(
                n_layer=12,
                n_head=12,
                n_embd=768,
                block_size=1024,
                vocab_size=50257,
                bias=True,
            ),
            TrainConfig(tokenizer="bpe", learning_rate=6e-4, min_lr=6e-5, beta2=0.95),
            "the shape of OpenAI's GPT-2 small (124M): for loading its weights, not training here",
        ),
    )
}


def _convert(name: str, text: str, kind: type) -> Any:
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in words:
            raise ValueError(f"--{name} expects true or false, got {text!r}")
        return words[text.lower()]
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{name} expects {kind.__name__}, got {text!r}") from None


def _field_types(cls) -> dict[str, type]:
    # `from __future__ import annotations` turns annotations into strings: map them back.
    names = {"int": int, "float": float, "bool": bool, "str": str}
    return {f.name: names[str(f.type)] for f in dataclasses.fields(cls)}


def get_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """The preset called `name`, with `overrides` (field -> value) applied to it.

    Override keys are GPTConfig or TrainConfig field names; values may be strings (as they
    come from the command line: "50", "true", "1e-3") and are converted to the field's type.
    An unknown name or key is an error that lists the valid ones.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    model_types, train_types = _field_types(GPTConfig), _field_types(TrainConfig)
    model_changes: dict[str, Any] = {}
    train_changes: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key in model_types:
            target, kind = model_changes, model_types[key]
        elif key in train_types:
            target, kind = train_changes, train_types[key]
        else:
            raise ValueError(
                f"unknown setting {key!r}; model settings: {sorted(model_types)}; "
                f"training settings: {sorted(train_types)}"
            )
        target[key] = _convert(key, value, kind) if isinstance(value, str) else value
    if "max_iters" in train_changes and "lr_decay_iters" not in train_changes:
        # A shorter or longer run keeps the recipe's shape: the cosine ends with the run.
        train_changes["lr_decay_iters"] = max(1, train_changes["max_iters"])
    return dataclasses.replace(
        preset,
        model=preset.model.replace(**model_changes),
        train=preset.train.replace(**train_changes),
    )


def check_resumed_optimizer(state: dict[str, Any], train: TrainConfig) -> None:
    """A run resumes with the optimizer it was started with (its state has that shape)."""
    saved = (state.get("train_config") or {}).get("optimizer", "adamw")  # older runs: AdamW
    if saved != train.optimizer:
        raise ValueError(
            f"the checkpoint was trained with optimizer {saved!r}, the preset asks for "
            f"{train.optimizer!r}: resume with the same optimizer"
        )


# --------------------------------------------------------------------------------------
# The CPU speedrun (chapter 11): the lowest val loss in 300 s of training on 2 cores
# --------------------------------------------------------------------------------------

SPEEDRUN_BUDGET_S = 300.0  # seconds of training (evaluation excluded)

# What the speedrun changes in nanoGPT's CPU recipe (shakespeare-char-cpu), each change a
# measured run: `python benchmarks/speedrun.py --ablations` trains the preset without each
# one, and the README's table gives what each bought.
SPEEDRUN_CHANGES: dict[str, dict[str, Any]] = {
    # Muon orthogonalizes each block matrix's momentum (every direction of the update the
    # same size), so a step teaches more (without it, AdamW at the same rate: +0.033),
    # for about 1.45x the time per step here (the Newton-Schulz iterations)
    "Muon": {"optimizer": "muon"},
    # Muon's updates are scaled to AdamW's size and tolerate a larger rate: 6e-3 measured
    # best of 3e-3, 6e-3 and 1e-2 in 300 s (without it, Muon at 1e-3: +0.024)
    "learning rate 6e-3": {"learning_rate": 6e-3, "min_lr": 6e-5},
}


def speedrun_baseline(overrides: dict[str, Any] | None = None) -> Preset:
    """nanoGPT's shakespeare-char-cpu recipe stretched to the speedrun's budget: its
    cosine over SPEEDRUN_BUDGET_S seconds of training instead of 2000 steps, scored on
    the whole validation split (`full_val`)."""
    stretched = {"time_budget_s": SPEEDRUN_BUDGET_S, "max_iters": 10**7, "full_val": True,
                 "eval_interval": 1000, "threads": 0}  # fmt: skip
    return get_preset("shakespeare-char-cpu", {**stretched, **(overrides or {})})


def speedrun_preset(
    without: set[str] | frozenset[str] = frozenset(), overrides: dict[str, Any] | None = None
) -> Preset:
    """The `speedrun-cpu` preset: `speedrun_baseline` with every SPEEDRUN_CHANGES entry but
    those named in `without` (an ablation), then `overrides`."""
    unknown = sorted(set(without) - set(SPEEDRUN_CHANGES))
    if unknown:
        raise KeyError(f"no speedrun change {unknown}; the changes: {list(SPEEDRUN_CHANGES)}")
    changes: dict[str, Any] = {}
    for name, change in SPEEDRUN_CHANGES.items():
        if name not in without:
            changes.update(change)
    preset = speedrun_baseline({**changes, **(overrides or {})})
    name = "speedrun-cpu" + "".join(f" without {n}" for n in SPEEDRUN_CHANGES if n in without)
    about = (f"the lowest Tiny Shakespeare val loss in {SPEEDRUN_BUDGET_S:.0f} s of training "
             "on 2 CPU cores (chapter 11; benchmarks/speedrun.py)")  # fmt: skip
    return dataclasses.replace(preset, name=name, about=about)


PRESETS["speedrun-cpu"] = speedrun_preset()

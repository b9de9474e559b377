"""Train the PyTorch GPT: an explicit loop, checkpoints that resume exactly, and metrics.

    from course.config import get_preset
    from course.torch.train import train, load_model
    result = train(get_preset("shakespeare-char-cpu"), "out/shakespeare")
    model, tokenizer = load_model("out/shakespeare")        # for course.torch.generate

One optimizer step: set the learning rate (`lr_at`, shared with the Keras side), run
`grad_accum` micro-batches forward and backward (each loss divided by grad_accum, so the
gradients add up to the gradient of the mean), clip the global gradient norm, step AdamW.
Every `log_interval` steps an event {"event": "train", "iter", "loss", "lr", "ms_per_iter",
"tokens_per_sec"} is logged; every `eval_interval` steps, before the first and after the
last, {"event": "eval", "iter", "train_loss", "val_loss"} is, and a checkpoint written.
"iter" counts the steps done: a train event's loss and lr are those of step iter - 1
(0-based, as `lr_at` counts), an eval event measures the weights after `iter` steps.

A checkpoint holds everything the run depends on: weights, optimizer moments, the step,
both configs, the torch RNG state and the numpy batch generator's state. Resuming from
one therefore continues the very same run: the same batches, the same losses, bit for bit
(same machine, same thread count). Files are written atomically (a temporary file, then a
rename), so a run killed while saving leaves the previous checkpoint intact, and they are
read with `torch.load(weights_only=True)`, which never runs code stored in a file.

Started by torchrun (WORLD_SIZE > 1 in the environment), `train` is one rank of a
data-parallel run: every rank draws the same global batch from the shared generator and
trains on its slice (`course.torch.distributed.shard_batch`), the model wrapped in DDP, so
N ranks follow the one-process run of the same preset up to float rounding. Only rank 0
writes files and shows progress; every rank evaluates (identically) and sees the events.

    python -m course.train --preset nano --nproc 2 --out out/nano-ddp
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course.adapters import ADAPTER_FILE, check_fine_tuning_base, check_resumed_lora, run_lora
from course.config import GPTConfig, Preset, TrainConfig, check_resumed_optimizer, lr_at
from course.data import check_int, check_tokens, corpus_tokens, eval_seed, get_batch, split_windows
from course.files import replace_atomically, write_json
from course.metrics import (
    METRICS,
    TORCH_CHECKPOINT,
    EventLog,
    peak_rss_mb,
    progress_bar,
    run_summary,
)
from course.runtime import (
    check_torch_may_load_triton,
    pick_device,
    seed_everything,
    set_threads,
)
from course.tokenizers import BPETokenizer, CharTokenizer, tokenizer_from_state, tokenizer_state
from course.torch.devices import model_device
from course.torch.model import GPT

CHECKPOINT = TORCH_CHECKPOINT  # the checkpoint file in a run's out_dir
REQUIRED_KEYS = (
    "model", "optimizer", "step", "model_config", "train_config", "preset",
    "torch_rng", "numpy_rng", "tokenizer", "best_val_loss",
)  # fmt: skip

# --------------------------------------------------------------------------------------
# Optimizer and evaluation
# --------------------------------------------------------------------------------------


def configure_optimizer(model: torch.nn.Module, train_cfg: TrainConfig):
    """AdamW with two groups: matrices (dim >= 2: Linear weights, embeddings) decay,
    vectors (biases, LayerNorm weights) do not: shrinking a gain or a shift towards 0
    is not regularisation, it just fights the normalisation.

    The fused implementation (one kernel for every parameter) is the fastest here: about
    10% faster per step than `foreach` on 2 CPU cores and 40% faster than a Python loop
    over parameters. Where it is not available, `foreach` is used.

    With train_cfg.optimizer "muon": a `MuonAdamW`, Muon on the matrices of the blocks and
    AdamW (as above) on the embeddings (the tied head with them) and the vectors.
    """
    check_torch_may_load_triton("Building a PyTorch optimizer")  # an error, not an abort
    params = [p for p in model.parameters() if p.requires_grad]  # the tied head counts once
    muon = []
    if train_cfg.optimizer == "muon":
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        muon = [p for p in params if p.dim() == 2 and id(p) not in embeddings]
        chosen = {id(p) for p in muon}
        params = [p for p in params if id(p) not in chosen]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": train_cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = dict(lr=train_cfg.learning_rate, betas=(train_cfg.beta1, train_cfg.beta2))
    try:
        adamw = torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
        adamw = torch.optim.AdamW(groups, foreach=True, **kwargs)
    if not muon:
        return adamw
    return MuonAdamW(
        Muon(muon, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay,
             momentum=MUON_MOMENTUM, nesterov=True, adjust_lr_fn="match_rms_adamw"),
        adamw,
    )  # fmt: skip


MUON_MOMENTUM = 0.95  # Muon's default, as Keras' Muon


def orthogonalize(
    update: torch.Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Muon's approximately orthogonal matrix nearest `update` (2-D), computed in `dtype`:
    the update scaled to a norm of 1, then `steps` quintic Newton-Schulz iterations
    X <- a X + (b G + c G^2) X with G = X X^T (on the wide side, so G is the smaller
    square). Its singular values end between about 0.7 and 1.2, not exactly 1: enough
    for Muon, in 5 steps instead of ~20."""
    if update.dim() != 2:
        raise ValueError(f"Muon orthogonalizes matrices: got a {update.dim()}-D update")
    a, b, c = coefficients
    x = update.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """`torch.optim.Muon` (same arguments, groups and state) with its Newton-Schulz
    iterations in float32 on a CPU. torch's run them in bfloat16, which a GPU computes
    natively; a CPU without bfloat16 matrix units (AMX) emulates it: on a 2-core AMD EPYC
    the iterations of the speedrun model's 16 matrices took ~990 ms a step in bfloat16
    against 31-41 ms in float32 (`benchmarks/speedrun.py --muon-steps`). On CUDA they stay
    in bfloat16, as torch's. Keras' `keras.optimizers.Muon` computes them in float32 too."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            for param, grad, buffer in zip(params, grads, buffers, strict=True):
                buffer.lerp_(grad, 1 - group["momentum"])
                update = grad.lerp(buffer, group["momentum"]) if group["nesterov"] else buffer
                dtype = torch.bfloat16 if param.is_cuda else torch.float32
                update = orthogonalize(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype
                )
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update.to(param.dtype), alpha=-_muon_lr(group, param.shape))
        return loss


def _muon_lr(group: dict, shape: torch.Size) -> float:
    """The learning rate of a (rows, cols) matrix under the group's `adjust_lr_fn`, as
    torch.optim.Muon computes it: "match_rms_adamw" 0.2 * sqrt(max(rows, cols)) (updates
    the size of AdamW's), "original" (or None) sqrt(max(1, rows / cols))."""
    rows, cols = shape[:2]
    rule = group["adjust_lr_fn"]
    if rule == "match_rms_adamw":
        return group["lr"] * 0.2 * math.sqrt(max(rows, cols))
    if rule in (None, "original"):
        return group["lr"] * math.sqrt(max(1, rows / cols))
    raise ValueError(f"adjust_lr_fn must be 'original' or 'match_rms_adamw', got {rule!r}")


class MuonAdamW:
    """Two optimizers stepped as one: Muon on the blocks' matrices, AdamW on the rest.

    Muon replaces a matrix's momentum by the nearest orthogonal matrix (five Newton-Schulz
    iterations): every direction of the update gets the same size, so the rare directions
    learn as fast as the common ones. Its `match_rms_adamw` scaling (0.2 * sqrt(max(rows,
    cols))) gives its updates the size of AdamW's, so both take the same learning rate,
    as Keras' `keras.optimizers.Muon` does (its rms_rate=0.2).

    `param_groups` lists both optimizers' groups (setting a group's "lr" sets it where
    it lives); `state_dict` holds both.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError(
                f"this optimizer state has {sorted(state)}, not Muon's and AdamW's: was the "
                "checkpoint written with optimizer 'adamw'? Resume with the same optimizer"
            )
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


@torch.no_grad()
def full_split_loss(model: torch.nn.Module, data, block_size: int, batch_size: int = 64) -> float:
    """The mean loss over every target of `data` (`course.data.split_windows`), in eval
    mode (restored after), batch_size windows at a time, summed in float64."""
    check_int("batch_size", batch_size, 1)
    x, y = split_windows(data, block_size)
    device = model_device(model)
    was_training = model.training
    model.eval()
    total, counted = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = _to_tensors(x[i : i + batch_size], y[i : i + batch_size], device)
            n = int((yb != -1).sum())
            total += float(model(xb, yb)[1]) * n  # the model's loss is the mean over n
            counted += n
    finally:
        model.train(was_training)
    return total / counted


def _to_tensors(
    x: np.ndarray, y: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # No copy on the CPU: the tensors share the numpy arrays' memory.
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    splits: dict[str, np.ndarray],
    batch_size: int,
    block_size: int,
    eval_iters: int,
    seed: int,
) -> dict[str, float]:
    """The mean loss over `eval_iters` random batches of each split, in eval mode.

    The batches come from their own generator, np.random.default_rng(seed), so evaluating
    never moves the training batch stream. The model's train/eval mode is restored.
    """
    device = model_device(model)  # the index too: cuda:1 stays cuda:1
    was_training = model.training
    model.eval()
    try:
        rng = np.random.default_rng(seed)
        out = {}
        for name, data in splits.items():
            total = torch.zeros((), device=device)
            for _ in range(eval_iters):
                x, y = _to_tensors(*get_batch(data, batch_size, block_size, rng), device)
                total += model(x, y)[1]
            out[name] = total.item() / eval_iters
        return out
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------
# Checkpoints: written atomically (course.files), read without running code
# --------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike[str], **state: Any) -> None:
    """torch.save(state) to `path`, atomically. Store tensors, numbers, strings, lists
    and dicts only: `load_checkpoint` refuses anything else."""
    replace_atomically(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors mapped to the CPU).

    Uses torch.load(weights_only=True): a file holding pickled Python objects is refused
    without running any of their code. Raises FileNotFoundError if there is no file, and
    ValueError if it is damaged, not a checkpoint, or lacks one of REQUIRED_KEYS.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"checkpoint {path} is corrupt or not a checkpoint (not a torch zip file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged archive
        if "GLOBAL" in str(err):
            raise ValueError(
                f"checkpoint {path} holds pickled Python objects, which could run code when "
                "loaded; it was not loaded (save only tensors, numbers, strings, lists, dicts)"
            ) from None
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"checkpoint {path} is corrupt or not a checkpoint: {first_line}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of state")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} is missing {missing}: not a training checkpoint")
    return state


def _checkpoint_path(out_dir: str | os.PathLike[str]) -> Path:
    path = Path(out_dir)
    return path if path.is_file() else path / CHECKPOINT


def load_model(
    out_dir: str | os.PathLike[str],
) -> tuple[GPT, CharTokenizer | BPETokenizer | None]:
    """The trained GPT in out_dir/ckpt.pt (CPU, eval mode) and its tokenizer: a
    CharTokenizer, a BPETokenizer for tokenizer="bpe" runs, or None if `train` was given
    token arrays without a tokenizer. `out_dir` may also be the checkpoint file itself."""
    state = load_checkpoint(_checkpoint_path(out_dir))
    model = GPT(GPTConfig.from_dict(state["model_config"]))
    if state.get("lora"):  # a LoRA fine-tuning run: its layers first, then its weights
        from course.torch.lora import apply_lora

        apply_lora(model, **state["lora"])
    model.load_state_dict(state["model"])
    return model.eval(), tokenizer_from_state(state["tokenizer"])


def _init_weights(init_from, mcfg: GPTConfig) -> tuple[dict[str, Any], Any]:
    """(weights, tokenizer state) of the run in `init_from` that a fine-tuning run starts
    from, once `course.adapters.check_fine_tuning_base` accepts it."""
    state = load_checkpoint(_checkpoint_path(init_from))
    check_fine_tuning_base(state, mcfg, init_from)
    return state["model"], state["tokenizer"]


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: GPT  # the trained model (the original module, never the torch.compile wrapper)
    optimizer: torch.optim.Optimizer
    metrics: dict[str, Any]  # what metrics.json holds
    history: list[dict[str, Any]] = field(default_factory=list)  # every logged event


def train_step(
    forward, optimizer, next_batch, lr: float, train_cfg: TrainConfig, *, no_sync=None
) -> torch.Tensor:
    """One optimizer step over `grad_accum` micro-batches from next_batch() -> (x, y).

    no_sync: a DDP model's `no_sync` (or None): every micro-batch but the last runs inside
    it, so gradients are summed locally and averaged over the ranks once per step.
    Returns the step's mean loss as a 0-d tensor: reading it (.item()) is left to the
    caller, who does so only when it logs.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)  # no zero-filling, and backward writes, not adds
    loss_sum = 0.0
    for i in range(train_cfg.grad_accum):
        x, y = next_batch()  # (B, T) each
        last = i == train_cfg.grad_accum - 1
        with nullcontext() if no_sync is None or last else no_sync():
            loss = forward(x, y)[1]
            (loss / train_cfg.grad_accum).backward()  # gradients add up over micro-batches
        loss_sum = loss_sum + loss.detach()
    if train_cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(
            [p for group in optimizer.param_groups for p in group["params"]], train_cfg.grad_clip
        )
    optimizer.step()
    return loss_sum / train_cfg.grad_accum


def _ranks() -> tuple[int, int]:
    """(rank, world_size) of this process as torchrun's environment says: (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def train(
    preset: Preset,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    tokenizer=None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    model: GPT | None = None,
    init_from: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train a GPT with `preset` and return it with its optimizer, metrics and history.

    data: (train_tokens, val_tokens) 1-D int arrays; default Tiny Shakespeare through
    `course.data.corpus_tokens`, encoded with `tokenizer` (default: built from the text as
    the preset's `tokenizer` says) and cached, so a later run does not encode it again.
    The preset's `threads` is applied with `course.runtime.set_threads` (0 = one per core).
    out_dir: where ckpt.pt, metrics.jsonl and metrics.json go (nothing is written if None).
    resume: continue from out_dir/ckpt.pt, exactly where it stopped. callback(event) sees
    every event logged to metrics.jsonl. model: train this GPT instead of a new one.
    init_from: fine-tune the run in that folder (its weights and tokenizer; the preset must
    give the same model shape); with the preset's `lora_r` > 0, only LoRA adapters train
    (`course.torch.lora.apply_lora`, every other weight frozen) and each checkpoint also
    writes the adapter alone to out_dir/adapter.safetensors.
    The last step's (clipped) gradients stay on the parameters' .grad.

    Under torchrun (WORLD_SIZE > 1) this is one rank of a data-parallel run: the process
    group is joined here if it is not yet (gloo on the CPU, nccl on GPUs) and left at the
    end; preset.train.batch_size is the global batch and must divide by the world size.
    Only rank 0 writes to out_dir and shows progress; `callback` runs on every rank.
    """
    rank, world_size = _ranks()
    kwargs = dict(data=data, tokenizer=tokenizer, resume=resume, callback=callback,
                  model=model, init_from=init_from)  # fmt: skip
    if world_size == 1:
        return _train(preset, out_dir, progress=progress, **kwargs)
    import torch.distributed as dist

    batch_size = preset.train.batch_size
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} must divide by the world size {world_size} (each rank "
            f"trains on an equal slice of the batch): use a multiple of {world_size}"
        )
    own_group = not dist.is_initialized()
    if own_group:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        progress = progress and rank == 0
        return _train(
            preset, out_dir, progress=progress, rank=rank, world_size=world_size, **kwargs
        )
    finally:
        if own_group:
            gc.collect()  # DDP's reducer goes while the group is still there
            dist.destroy_process_group()


def _train(
    preset: Preset,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    data: tuple[np.ndarray, np.ndarray] | None,
    tokenizer,
    resume: bool,
    progress: bool,
    callback: Callable[[dict], None] | None,
    model: GPT | None,
    init_from: str | os.PathLike[str] | None,
    rank: int = 0,
    world_size: int = 1,
) -> TrainResult:
    """`train` on one process, or as rank `rank` of `world_size` in a joined process group."""

    distributed = world_size > 1
    if distributed and preset.train.time_budget_s > 0:
        raise ValueError(
            "time_budget_s needs one process: each rank would read its own clock and stop "
            "at another step. Give the ranks max_iters instead"
        )
    if distributed:
        import torch.distributed as dist

        from course.torch.distributed import shard_batch, wrap_ddp

    mcfg, tcfg = preset.model, preset.train
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs the out_dir that holds ckpt.pt")
    state = load_checkpoint(out / CHECKPOINT) if resume else None
    if state is not None and state["model_config"] != mcfg.to_dict():
        raise ValueError(
            f"the checkpoint's model {state['model_config']} differs from the preset's "
            f"{mcfg.to_dict()}: resume with the settings it was trained with"
        )
    if state is not None and tokenizer is None:
        tokenizer = tokenizer_from_state(state["tokenizer"])
    lora = run_lora(tcfg)
    if state is not None:
        check_resumed_lora(state, lora)
        check_resumed_optimizer(state, tcfg)
    base_weights = None
    if init_from is not None and state is None:  # on resume, the checkpoint holds them
        base_weights, base_tokenizer = _init_weights(init_from, mcfg)
        if tokenizer is None:
            tokenizer = tokenizer_from_state(base_tokenizer)

    threads = set_threads(tcfg.threads)
    if data is None:
        if distributed and rank != 0:
            dist.barrier()  # rank 0 encodes the corpus and caches it; the others read it
        *data, tokenizer = corpus_tokens(
            tokenizer=tokenizer,
            kind=tcfg.tokenizer,
            vocab_size=mcfg.vocab_size,
            val_fraction=tcfg.val_fraction,
            progress=progress,
        )
        if distributed and rank == 0:
            dist.barrier()
    splits = {
        name: check_tokens(name, tokens, mcfg.vocab_size, mcfg.block_size)
        for name, tokens in zip(("train", "val"), data[:2], strict=True)
    }

    seed_everything(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    if model is None:
        model = GPT(mcfg).to(pick_device())  # COURSE_DEVICE=cpu forces the CPU
    elif model.config != mcfg:
        raise ValueError(f"model.config {model.config} differs from the preset's {mcfg}")
    if base_weights is not None:
        model.load_state_dict(base_weights)
    if lora is not None:
        from course.torch.lora import apply_lora, save_adapter

        apply_lora(model, **lora, dropout=mcfg.dropout)  # new layers on the model's device
    device = model_device(model)
    optimizer = configure_optimizer(model, tcfg)
    rng = np.random.default_rng(tcfg.seed)  # the one generator of training batches
    step, best_val = 0, math.inf
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best_val = state["step"], state["best_val_loss"]
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]
    ddp = wrap_ddp(model) if distributed else None  # rank 0's weights go to every rank
    forward = torch.compile(ddp or model) if tcfg.compile else (ddp or model)
    model.train()
    writes = out is not None and rank == 0  # out_dir belongs to rank 0
    if writes:
        out.mkdir(parents=True, exist_ok=True)
    log = EventLog(out if writes else None, step if state is not None else None, callback)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = get_batch(splits["train"], tcfg.batch_size, mcfg.block_size, rng)  # (B, T)
        x, y = _to_tensors(x, y, device)
        return shard_batch(x, y, rank, world_size) if distributed else (x, y)  # (B/N, T)

    def mean_over_ranks(loss: torch.Tensor) -> torch.Tensor:
        if not distributed:
            return loss
        loss = loss.clone()
        dist.all_reduce(loss, op=dist.ReduceOp.SUM)  # gloo has no AVG
        return loss / world_size

    losses = {"train": math.nan, "val": math.nan}

    def evaluate() -> None:  # estimate both losses, log them, write a checkpoint
        nonlocal losses, best_val
        args = (tcfg.batch_size, mcfg.block_size, tcfg.eval_iters, eval_seed(tcfg.seed, step))
        # Every rank evaluates the same batches on the same weights: the same numbers.
        losses = estimate_loss(model if distributed else forward, splits, *args)
        best_val = min(best_val, losses["val"])
        log.record({"event": "eval", "iter": step} | {f"{k}_loss": v for k, v in losses.items()})
        if writes:
            save_checkpoint(
                out / CHECKPOINT,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                step=step,
                model_config=mcfg.to_dict(),
                train_config=tcfg.to_dict(),
                preset=preset.name,
                torch_rng=torch.get_rng_state(),
                numpy_rng=rng.bit_generator.state,
                tokenizer=tokenizer_state(tokenizer),
                best_val_loss=best_val,
                lora=lora,
                init_from=str(init_from) if init_from is not None else None,
                trained_seconds=trained_s,
            )
            if lora is not None:
                save_adapter(model, out / ADAPTER_FILE)
        if distributed:
            dist.barrier()  # the others wait while rank 0 writes

    tokens_per_step = tcfg.batch_size * tcfg.grad_accum * mcfg.block_size
    start_step, started = step, time.perf_counter()
    step_times: list[float] = []  # seconds per step, training only (no evaluation)
    logged_at = 0  # index into step_times of the last train event
    budget = tcfg.time_budget_s
    trained_s = float(state.get("trained_seconds", 0.0)) if state is not None else 0.0

    def out_of_time() -> bool:
        return budget > 0 and trained_s >= budget

    bar = progress_bar(tcfg, step, trained_s, progress, preset.name)
    try:
        if step == 0:
            evaluate()  # the loss before training: about ln(vocab_size)
        while step < tcfg.max_iters and not out_of_time():
            tick = time.perf_counter()
            lr = lr_at(step, tcfg, trained_s / budget if budget > 0 else None)
            no_sync = ddp.no_sync if ddp is not None else None
            loss = train_step(forward, optimizer, next_batch, lr, tcfg, no_sync=no_sync)
            step += 1
            step_times.append(time.perf_counter() - tick)
            trained_s += step_times[-1]
            bar.update(step_times[-1] if budget > 0 else 1)
            if step % tcfg.log_interval == 0:
                ms = 1000 * float(np.mean(step_times[logged_at:]))
                logged_at = len(step_times)
                loss_value = mean_over_ranks(loss).item()
                tokens_per_sec = tokens_per_step / (ms / 1000)
                log.record(
                    {"event": "train", "iter": step, "loss": loss_value, "lr": lr,
                     "ms_per_iter": ms, "tokens_per_sec": tokens_per_sec}
                )  # fmt: skip
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
            if step % tcfg.eval_interval == 0 or step == tcfg.max_iters or out_of_time():
                evaluate()
        if step == start_step and step > 0:  # resumed at or past the end: report once more
            evaluate()
    finally:
        bar.close()
        log.close()
    full_val = full_split_loss(model, splits["val"], mcfg.block_size) if tcfg.full_val else None

    # The first step is left out of the speed (torch.compile compiles during it), unless
    # it is the only one.
    timed = step_times[1:] or step_times
    ms_per_iter = 1000 * float(np.mean(timed)) if timed else math.nan
    metrics = run_summary({
        "framework": "torch",
        "preset": preset.name,
        "iters": step,
        "resumed_from": start_step if state is not None else None,
        "train_loss": losses["train"],
        "val_loss": losses["val"],
        "best_val_loss": best_val,
        "full_val_loss": full_val,
        "train_seconds": trained_s,
        "tokens_per_sec": tokens_per_step / (ms_per_iter / 1000),
        "ms_per_iter": ms_per_iter,
        "first_iter_seconds": step_times[0] if step_times else math.nan,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - started,
        "n_params": model.num_params(),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lora": lora,
        "init_from": str(init_from) if init_from is not None else None,
        "threads": threads,
        "world_size": world_size,
        "workers": world_size,  # one process per rank
        "strategy": "DistributedDataParallel" if distributed else None,
        "device": str(device),
        "jit_compile": False,  # XLA is TensorFlow's; torch.compile is train_config.compile
        "run_eagerly": not tcfg.compile,
        "torch_version": torch.__version__,
        "model_config": mcfg.to_dict(),
        "train_config": tcfg.to_dict(),
    })  # fmt: skip
    if writes:
        write_json(out / METRICS, metrics)
    return TrainResult(model=model, optimizer=optimizer, metrics=metrics, history=log.history)

"""Training one GPT on several processes: data parallel by hand, DDP, FSDP2, sharded checkpoints.

    from course.torch.launch import launch
    from my_workers import train_worker            # a module-level function in a .py file
    result = launch(train_worker, 2, config)       # rank 0's return value

`course.torch.launch` starts the processes (one per rank, in one process group) and calls
`worker(rank, world_size, *args)` in each. What happens inside a worker:

- data parallel: each rank takes its slice of the batch (`shard_batch`), computes its
  gradients, and the ranks average them. By hand: `all_reduce_gradients` (SUM, then divide
  by world size). With DDP: the same average, in buckets overlapped with backward;
  `accumulate_with_no_sync` sums micro-batches locally and averages once per step.
- fully sharded (FSDP2, `shard_model`): each rank also keeps only a slice of every
  parameter, gradient and optimizer moment, gathering a block's weights just in time.
- checkpoints (`save_sharded`, `load_sharded`): each rank writes its own slice; a checkpoint
  saved by N ranks loads into any other number of processes, or into one plain process.
"""

from __future__ import annotations

import shutil
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from course.checks import check_int

# --------------------------------------------------------------------------------------
# Data parallel by hand: a slice of the batch per rank, gradients averaged
# --------------------------------------------------------------------------------------


def shard_batch(
    x: torch.Tensor, y: torch.Tensor, rank: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s contiguous slice of the batch: rows rank*b .. (rank+1)*b of x and y
    (B, T), b = B / world_size. The slices of all ranks are disjoint and cover the batch."""
    check_int("world_size", world_size, 1)
    check_int("rank", rank, 0)
    if rank >= world_size:
        raise ValueError(
            f"rank must be in 0..{world_size - 1} (world_size {world_size}), got {rank}"
        )
    if x.shape[:1] != y.shape[:1]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must have the same batch size")
    B = x.size(0)
    if B % world_size:
        raise ValueError(
            f"the batch size {B} of x must divide by world_size {world_size} (equal slices "
            f"keep every rank's mean loss on the same scale); use a multiple of {world_size}"
        )
    b = B // world_size
    return x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]  # (b, T) each


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank (DDP does this when it wraps)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor, src)


@torch.no_grad()
def all_reduce_gradients(model: nn.Module, average: bool = True) -> None:
    """Replace each parameter's .grad with the mean over ranks (SUM, then / world size).

    `model.parameters()` yields a shared parameter once (the GPT's wte is its lm_head), so
    its gradient, already the sum of both uses, is reduced once. average=False keeps the
    SUM: world_size times too large, as if the learning rate had been multiplied by it.
    One all-reduce per parameter: simple, and slower than DDP's buckets.
    """
    world_size = dist.get_world_size()
    for param in model.parameters():
        if param.grad is None:
            continue
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        if average:
            param.grad /= world_size


# --------------------------------------------------------------------------------------
# DDP: the same average, in buckets, while backward runs
# --------------------------------------------------------------------------------------


def wrap_ddp(model: nn.Module, **ddp_kwargs: Any) -> DDP:
    """`model` wrapped in DistributedDataParallel on this rank's device (rank 0's weights
    are broadcast to every rank as it wraps)."""
    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=device_ids, **ddp_kwargs)


class AllReduceCounter:
    """State of `count_all_reduces`' hook: `calls` bucket all-reduces, `syncs` gradient
    synchronisations (one per backward that reduces, however many buckets it has)."""

    def __init__(self, process_group=None) -> None:
        self.process_group = process_group
        self.calls = 0
        self.syncs = 0

    def reset(self) -> None:
        self.calls = self.syncs = 0


def _counting_allreduce_hook(state: AllReduceCounter, bucket):
    state.calls += 1
    state.syncs += bucket.index() == 0  # every synchronisation reduces bucket 0 once
    return default_hooks.allreduce_hook(state.process_group, bucket)


def count_all_reduces(ddp_model: DDP) -> AllReduceCounter:
    """Make `ddp_model` count its all-reduces (DDP's own averaging hook, counted); register
    before the first backward. Returns the counter."""
    counter = AllReduceCounter()
    ddp_model.register_comm_hook(counter, _counting_allreduce_hook)
    return counter


def accumulate_with_no_sync(ddp_model: DDP, micro_batches) -> torch.Tensor:
    """Forward and backward on each (x, y) of `micro_batches`, each loss divided by their
    number; gradients are summed locally under `no_sync()` and all-reduced only in the last
    backward: one synchronisation per optimizer step. Returns the mean loss (0-d tensor)."""
    micro_batches = list(micro_batches)
    if not micro_batches:
        raise ValueError("micro_batches is empty: give at least one (x, y) pair")
    n = len(micro_batches)
    total = None
    for i, (x, y) in enumerate(micro_batches):
        last = i == n - 1
        with nullcontext() if last else ddp_model.no_sync():
            loss = ddp_model(x, y)[1]
            (loss / n).backward()  # gradients add up to those of the mean loss
        total = loss.detach() if total is None else total + loss.detach()  # on its device
    return total / n


def ddp_step(ddp_model: DDP, optimizer, micro_batches, lr: float | None = None) -> torch.Tensor:
    """One optimizer step of `ddp_model` over `micro_batches` (see accumulate_with_no_sync);
    sets the learning rate to `lr` first if given. Returns the mean loss."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = accumulate_with_no_sync(ddp_model, micro_batches)
    optimizer.step()
    return loss


# --------------------------------------------------------------------------------------
# FSDP2: each rank keeps a slice of every parameter, gradient and optimizer moment
# --------------------------------------------------------------------------------------


def shard_model(model: nn.Module, mixed_precision=None) -> nn.Module:
    """Shard a GPT with FSDP2 (`torch.distributed.fsdp.fully_shard`), in place; return it.

    Each Transformer block becomes one group (its weights are all-gathered just before it
    runs and freed after), then the root takes what is left: wte (= lm_head, tied: one
    parameter, so one group), wpe and ln_f. Parameters become DTensors sharded on dim 0;
    `param.full_tensor()` gathers one. Build the optimizer after this call. For bfloat16
    compute with float32 gradient averaging (GPUs):

        from torch.distributed.fsdp import MixedPrecisionPolicy
        shard_model(model, MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                reduce_dtype=torch.float32))
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    blocks = getattr(getattr(model, "transformer", None), "h", None)
    if blocks is None:
        raise TypeError(
            f"model must be a course GPT (with transformer.h blocks), got {type(model).__name__}"
        )
    policy = mixed_precision if mixed_precision is not None else MixedPrecisionPolicy()
    if not isinstance(policy, MixedPrecisionPolicy):
        raise TypeError(
            f"mixed_precision must be a torch.distributed.fsdp.MixedPrecisionPolicy or None, "
            f"got {type(mixed_precision).__name__}"
        )
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)  # the root: embeddings, tied head, final LayerNorm
    return model


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of `model`, whole and on the CPU (DTensors are gathered: a
    collective, so every rank must call it). Named once each: the tied head is wte."""
    out = {}
    for name, param in model.named_parameters():
        tensor = param.full_tensor() if hasattr(param, "full_tensor") else param
        out[name] = tensor.detach().cpu().clone()
    return out


# --------------------------------------------------------------------------------------
# Sharded checkpoints (torch.distributed.checkpoint): each rank writes its slice
# --------------------------------------------------------------------------------------


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def save_sharded(folder, model: nn.Module, optimizer, step: int) -> Path:
    """Save model and optimizer (sharded or not) with the step to the folder `folder`.

    Every rank must call it. Each writes its own slice into a temporary folder beside
    `folder`; rank 0 renames it to `folder` once all are written (the previous checkpoint
    is kept as .<name>.old until then), so a crash mid-save keeps the last complete one.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    check_int("step", step, 0)
    folder = Path(folder)
    part, old = _sibling(folder, "part"), _sibling(folder, "old")
    coordinator = not _distributed() or dist.get_rank() == 0
    if coordinator:
        shutil.rmtree(part, ignore_errors=True)  # a save that crashed before
        part.mkdir(parents=True)
    _barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "step": torch.tensor(step)}
    with _quiet_single_process():
        dcp.save(state, checkpoint_id=part, no_dist=not _distributed())
    _barrier()  # every slice and the metadata are written
    if coordinator:
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        part.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return folder


def load_sharded(folder, model: nn.Module, optimizer) -> int:
    """Load a `save_sharded` checkpoint into model and optimizer, in place; return its step.

    Works with any number of processes, sharded or not: one plain process without a
    process group reads a checkpoint that two FSDP2 ranks wrote. Every rank must call it.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    folder = Path(folder)
    if not (folder / ".metadata").is_file():
        old = _sibling(folder, "old")  # a crash between save_sharded's two renames
        if not (old / ".metadata").is_file():
            raise FileNotFoundError(f"no sharded checkpoint (no .metadata file) in {folder}")
        folder = old
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "step": torch.tensor(0)}
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=folder, no_dist=not _distributed())
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    return int(state["step"])


@contextmanager
def _quiet_single_process():
    """Silence DCP's warning that it works in one process: without a group, that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process")
        yield


def _sibling(folder: Path, kind: str) -> Path:
    return folder.with_name(f".{folder.name}.{kind}")

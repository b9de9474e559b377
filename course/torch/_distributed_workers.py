"""Workers for `course.torch.launch.launch`: the chapter's experiments, one per function.

Spawned processes import a worker by name, so each is a module-level function here, called
as worker(rank, world_size, *args). What rank 0 returns comes back to the caller: plain
dicts of CPU tensors, compared there with one process doing the same work on the whole batch.
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy

from course.config import GPTConfig
from course.torch import distributed as D
from course.torch.model import GPT


def _gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of `tensor` (rank r's at index r)."""
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor.contiguous())
    return out


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def _same_on_all_ranks(model: torch.nn.Module) -> bool:
    """Whether every rank holds exactly this rank's parameters."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return all(torch.equal(other, flat) for other in _gathered(flat))


def echo(rank: int, world_size: int, value):
    """(value, world size, sum of the ranks): the smallest check that a launch works."""
    total = torch.tensor(float(rank))
    dist.all_reduce(total)
    return value, world_size, total.item()


def environment(rank: int, world_size: int, name: str):
    """(os.environ.get(name), this rank's process id): what a rank sees of the caller."""
    return os.environ.get(name), os.getpid()


def noisy(rank: int, world_size: int, marker: str, die: bool):
    """Write `marker` to stderr from Python and from C (file descriptor 2, as a
    communication library's warnings are written), then return "done", or, with `die`,
    exit at once on rank 1 (os._exit(5)) while rank 0 waits for it."""
    print(f"{marker} from Python, rank {rank}", file=sys.stderr, flush=True)
    os.write(2, f"{marker} from C, rank {rank}\n".encode())
    if die and rank == 1:
        os._exit(5)
    dist.barrier()
    return "done"


def fail_on_rank(rank: int, world_size: int, failing_rank: int, how: str):
    """`failing_rank` raises (how="raise"), exits at once (how="exit", os._exit(3)) or never
    arrives (how="hang") while the others wait for it in a collective: what `launch` does."""
    if rank == failing_rank:
        if how == "exit":
            os._exit(3)
        if how == "hang":
            time.sleep(3600)
        raise ValueError(f"rank {rank} was told to fail")
    dist.barrier()
    return "finished"


def data_parallel(rank: int, world_size: int, config: GPTConfig, x, y, seed: int, lr: float):
    """DDP and the hand-written all-reduce on the same shards, from the same weights.

    Returns DDP's gradients, the hand-written average's and its SUM, and whether the ranks
    (seeded differently) hold identical parameters after one SGD step of each method.
    """
    xs, ys = D.shard_batch(x, y, rank, world_size)
    torch.manual_seed(seed + rank)  # different weights on every rank, on purpose
    model = GPT(config)
    ddp = D.wrap_ddp(model)  # broadcasts rank 0's weights
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    ddp(xs, ys)[1].backward()
    ddp_grads = _grads(model)
    torch.optim.SGD(model.parameters(), lr=lr).step()
    ddp_same = _same_on_all_ranks(model)

    torch.manual_seed(seed + 100 + rank)
    plain = GPT(config)  # no DDP: weights differ until broadcast
    differed = not _same_on_all_ranks(plain)
    D.broadcast_parameters(plain)
    broadcast_same = _same_on_all_ranks(plain)
    with torch.no_grad():
        for name, p in plain.named_parameters():
            p.copy_(start[name])  # the same start as DDP's, to compare the gradients
    plain(xs, ys)[1].backward()
    local = _grads(plain)
    D.all_reduce_gradients(plain, average=False)
    summed = _grads(plain)
    for name, p in plain.named_parameters():
        p.grad.copy_(local[name])
    D.all_reduce_gradients(plain)
    by_hand = _grads(plain)
    torch.optim.SGD(plain.parameters(), lr=lr).step()
    hand_same = _same_on_all_ranks(plain)
    return {
        "start": start,
        "ddp": ddp_grads,
        "by_hand": by_hand,
        "summed": summed,
        "weights_differed_before_broadcast": differed,
        "identical_after_broadcast": broadcast_same,
        "ddp_ranks_identical": ddp_same,
        "by_hand_ranks_identical": hand_same,
        "shard": (rank * x.size(0) // world_size, xs.size(0)),
    }


def no_sync_steps(rank: int, world_size: int, config: GPTConfig, batches, seed: int, lr: float):
    """Two optimizer steps of `ddp_step`, each over the micro-batches of `batches[i]` (a list
    of whole (x, y) micro-batches, sharded here), counting DDP's all-reduces per step."""
    torch.manual_seed(seed)
    model = GPT(config)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    ddp = D.wrap_ddp(model)
    counter = D.count_all_reduces(ddp)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    syncs, calls, grads = [], [], []
    for micro_batches in batches:
        counter.reset()
        shards = [D.shard_batch(x, y, rank, world_size) for x, y in micro_batches]
        D.ddp_step(ddp, optimizer, shards)
        syncs.append(counter.syncs)
        calls.append(counter.calls)
        grads.append(_grads(model))
    return {"start": start, "syncs": syncs, "calls": calls, "grads": grads}


def fsdp_step_and_save(
    rank: int, world_size: int, config: GPTConfig, x, y, seed: int, lr: float, folder: str
):
    """One SGD step of an FSDP2-sharded GPT on this rank's shard, its full weights gathered;
    then a few AdamW steps and a sharded checkpoint in `folder`, with the gathered weights
    and optimizer moments it holds."""
    torch.manual_seed(seed)
    model = GPT(config)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    D.shard_model(model)
    # The parameters the root's group gathers (FSDP2 keeps that list in a private field).
    root_group = model._get_fsdp_state()._fsdp_param_group
    root_params = {id(fsdp_param.sharded_param) for fsdp_param in root_group.fsdp_params}
    placements = {name: str(p.placements) for name, p in model.named_parameters()}
    xs, ys = D.shard_batch(x, y, rank, world_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model(xs, ys)[1].backward()
    optimizer.step()
    after_sgd = D.full_state(model)

    adamw = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(2):
        adamw.zero_grad()
        model(xs, ys)[1].backward()
        adamw.step()
    D.save_sharded(folder, model, adamw, step=7)

    torch.manual_seed(seed)
    bf16 = D.shard_model(GPT(config), MixedPrecisionPolicy(torch.bfloat16, torch.float32))
    logits, loss_bf16 = bf16(xs, ys)
    loss_bf16.backward()
    moments = {
        name: adamw.state[p]["exp_avg"].full_tensor().cpu() for name, p in model.named_parameters()
    }
    return {
        "start": start,
        "after_sgd": after_sgd,
        "saved": D.full_state(model),
        "saved_exp_avg": moments,
        "tied": model.lm_head.weight is model.transformer.wte.weight,
        "root_owns_wte": id(model.transformer.wte.weight) in root_params,
        "root_size": len(root_params),
        "placements": placements,
        "bf16": {
            "logits_dtype": logits.dtype,
            "loss": loss_bf16.item(),
            "grad_dtype": bf16.transformer.wte.weight.grad.dtype,  # sharded fp32 master grads
            "param_dtype": bf16.transformer.wte.weight.dtype,
        },
    }

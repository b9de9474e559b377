"""Chapter 09: plausible wrong answers for the distributed exercises, and the right answers
the tests must also accept (the library's references, and TensorFlow's own way of counting
the global batch).

Each wrong answer is the solution cell with one mistake made in it (`tests/chapters.Mistakes`).
The PyTorch exercises are checked in 2 spawned ranks, so every one of these runs them.
"""

from dataclasses import astuple

from autograde.probe import ReferenceAnswer

from . import Mistakes

_mistake = Mistakes("09_distributed")

_SLICES = "return x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]"
_CHECK = (
    "    if B % world_size:\n"
    '        raise ValueError(f"the batch size {B} must divide by world_size {world_size}")\n'
)
_REDUCE_LOOP = (
    "    for param in model.parameters():\n"
    "        if param.grad is not None:\n"
    "            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)\n"
    "            param.grad /= world_size\n"
)
_NO_SYNC = "with ddp_model.no_sync() if i < n - 1 else nullcontext():"
_FORWARD_BACKWARD = (
    f"        {_NO_SYNC}\n"
    "            _, loss = ddp_model(x, y)\n"
    "            (loss / n).backward()\n"
)
_BLOCKS = "    for block in model.transformer.h:\n        fully_shard(block)\n"
_ROOT = "    fully_shard(model)\n"
_REPLICA_LOSS = (
    "loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)"
)

WRONG_ANSWERS = [
    # --- exercise 1: shard_batch ---
    _mistake("shard_batch", "no check: the rows that do not divide are dropped", (_CHECK, "")),
    _mistake("shard_batch", "interleaved rows (x[rank::world_size]), not a contiguous slice",
             (_SLICES, "return x[rank::world_size], y[rank::world_size]")),
    _mistake("shard_batch", "y left whole", (_SLICES, "return x[rank * b : (rank + 1) * b], y")),
    _mistake("shard_batch", "slices of world_size rows", ("b = B // world_size", "b = world_size")),
    _mistake("shard_batch", "one row too many: neighbouring slices overlap",
             (_SLICES, _SLICES.replace("(rank + 1) * b]", "(rank + 1) * b + 1]"))),
    # --- exercise 2: all_reduce_gradients ---
    _mistake("all_reduce_gradients", "SUM without dividing by the world size",
             ("            param.grad /= world_size\n", "")),
    _mistake("all_reduce_gradients", "the tied weight reduced twice (walking the modules)",
             (_REDUCE_LOOP,
              "    for module in model.modules():\n"
              "        for param in module.parameters(recurse=False):\n"
              "            if param.grad is not None:\n"
              "                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)\n"
              "                param.grad /= world_size\n")),
    _mistake("all_reduce_gradients", "a copy all-reduced: each rank keeps its own gradient",
             ("            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)\n"
              "            param.grad /= world_size\n",
              "            dist.all_reduce(param.grad / world_size, op=dist.ReduceOp.SUM)\n")),
    _mistake("all_reduce_gradients", "parameters without a gradient not skipped",
             (_REDUCE_LOOP,
              "    for param in model.parameters():\n"
              "        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)\n"
              "        param.grad /= world_size\n")),
    # --- exercise 3: ddp_step ---
    _mistake("ddp_step", "every rank on the whole batch",
             ("xs, ys = shard_batch(x, y, rank, world_size)", "xs, ys = x, y")),
    _mistake("ddp_step", "every rank on rank 0's slice",
             ("shard_batch(x, y, rank, world_size)", "shard_batch(x, y, 0, world_size)")),
    _mistake("ddp_step", "the loss multiplied by world_size (as if DDP summed)",
             ("    loss.backward()\n", "    (loss * world_size).backward()\n")),
    _mistake("ddp_step", "gradients never cleared",
             ("    optimizer.zero_grad(set_to_none=True)\n", "")),
    _mistake("ddp_step", "stepped before backward",
             ("    loss.backward()\n    optimizer.step()\n",
              "    optimizer.step()\n    loss.backward()\n")),
    # --- exercise 4: accumulate_with_no_sync ---
    _mistake("accumulate_with_no_sync", "no_sync never used", (_NO_SYNC, "with nullcontext():")),
    _mistake("accumulate_with_no_sync", "every micro-batch inside no_sync, the last too",
             (_NO_SYNC, "with ddp_model.no_sync():")),
    _mistake("accumulate_with_no_sync", "no_sync around the backward only",
             (_FORWARD_BACKWARD,
              "        _, loss = ddp_model(x, y)\n"
              f"        {_NO_SYNC}\n"
              "            (loss / n).backward()\n")),
    _mistake("accumulate_with_no_sync", "each loss not divided by the number of micro-batches",
             ("(loss / n).backward()", "loss.backward()")),
    _mistake("accumulate_with_no_sync", "the last micro-batch's loss returned",
             ("    return total / n\n", "    return loss.item()\n")),
    # --- exercise 5: shard_model ---
    _mistake("shard_model", "only the root sharded", (_BLOCKS, "")),
    _mistake("shard_model", "only the blocks sharded: no root group", (_ROOT, "")),
    _mistake("shard_model", "attention and MLP sharded, not the blocks",
             (_BLOCKS, "    for block in model.transformer.h:\n        fully_shard(block.attn)\n"
                       "        fully_shard(block.mlp)\n")),
    # --- exercise 6: the TensorFlow custom loop ---
    _mistake("distributed_train_step", "a per-replica mean (tf.reduce_mean)",
             (_REPLICA_LOSS, "loss = tf.reduce_mean(per_example)")),
    _mistake("distributed_train_step", "the replica's own batch size as the global one",
             (_REPLICA_LOSS, "loss = tf.nn.compute_average_loss(per_example, "
                             "global_batch_size=tf.shape(per_example)[0])")),
    _mistake("distributed_train_step", "the returned loss averaged over the replicas",
             ("tf.distribute.ReduceOp.SUM", "tf.distribute.ReduceOp.MEAN")),
]  # fmt: skip

REFERENCE_ANSWERS = [
    ReferenceAnswer("shard_batch", "course.torch.distributed.shard_batch",
                    "from course.torch.distributed import shard_batch"),
    ReferenceAnswer("all_reduce_gradients", "course.torch.distributed.all_reduce_gradients",
                    "from course.torch.distributed import all_reduce_gradients"),
    ReferenceAnswer("accumulate_with_no_sync", "course.torch.distributed.accumulate_with_no_sync",
                    "from course.torch.distributed import accumulate_with_no_sync"),
    ReferenceAnswer("shard_model", "course.torch.distributed.shard_model",
                    "from course.torch.distributed import shard_model"),
    ReferenceAnswer(*astuple(_mistake(  # right: gloo averages itself in this PyTorch
        "all_reduce_gradients", "ReduceOp.AVG",
        ("            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)\n"
         "            param.grad /= world_size\n",
         "            dist.all_reduce(param.grad, op=dist.ReduceOp.AVG)\n"),
    ))),
    ReferenceAnswer(*astuple(_mistake(  # right: in a replica, TF counts b * replicas for you
        "distributed_train_step", "the global batch size left to TensorFlow to count",
        (_REPLICA_LOSS, "loss = tf.nn.compute_average_loss(per_example)"),
    ))),
]  # fmt: skip

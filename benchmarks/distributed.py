"""Data parallel on 2 CPU ranks: step time, tokens/s and memory per rank, PyTorch and Keras.

One global batch (--batch sequences of block_size tokens, 8 x 64 by default) trained on
random tokens with the shakespeare-char-cpu GPT (--quick: 2 layers, 64 wide, 32 tokens),
one row per setup:

- PyTorch, one process, 1 thread: the whole batch (`launch` with world_size=1, so it is a
  fresh spawned process like the ranks, and its peak RSS compares with theirs);
- DDP, 2 ranks x 1 thread: each rank takes half of the batch (`shard_batch`, `wrap_ddp`);
- FSDP2, 2 ranks x 1 thread: half of the batch, and half of every parameter and AdamW
  moment (`shard_model`);
- TensorFlow, one process, one device, 1 intra-op thread: Keras `fit`, the reference for
- TensorFlow, one process, `MirroredStrategy` over 2 logical CPUs (`mirrored_strategy`),
  1 intra-op thread (the inter-op pool, 2 threads, runs the two replicas side by side);
- TensorFlow, `MultiWorkerMirroredStrategy`, 2 worker processes x 1 thread
  (`run_multiworker`: `custom_loop`, plain SGD).

PyTorch rows: AdamW (`configure_optimizer`), no gradient clipping. Each step is timed on
every rank from a barrier to the end of `optimizer.step()`; a step's time is the slowest
rank's, and the table gives the median over --steps timed steps after --warmup steps.
Keras `fit` rows: AdamW, no XLA (`jit_compile=False`, as `build_gpt` compiles), a step's
time is the interval between two consecutive `on_train_batch_end` calls (each reads the
loss, so the step has finished); median over the same counts. `run_multiworker` only reports
the seconds of a whole run (two TensorFlow processes starting, connecting, tracing and
training), so its step time is a difference: runs of --warmup steps and of --warmup +
--mw-steps steps, alternated --mw-repeats times, (fastest long run - fastest short run) /
--mw-steps; each run's own disturbances only add time, so the fastest of each is its least
disturbed. The start-up of two TensorFlow processes varies by seconds on a shared machine, so
this figure is the noisiest of the table: each pair's own estimate is printed under it, and
on a loaded machine two pairs can differ by 2x. More --mw-steps and --mw-repeats steady it.

Memory per rank: peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss` inside each rank (the
largest of the ranks is shown); for the worker processes of `run_multiworker` it is
`RUSAGE_CHILDREN` of the process that started them (the largest of them). "params + opt"
is the bytes a rank holds of the parameters and AdamW's exp_avg and exp_avg_sq (FSDP2: the
local shards, `DTensor.to_local()`; Keras: one replica's copy of the weights and of the
optimizer's moments; the multi-worker loop's SGD has no state).

Target: FSDP2's params + opt per rank <= 0.55 x one process's (half, within 10%).

Two CPU cores cannot show a speed-up: the fair comparison is 2 ranks x 1 thread against one
process x 1 thread on the same global batch, and the ranks share the 2 cores with each other,
with their communication threads and with whatever else runs on the machine (the load
average is printed). The rows show what data parallelism costs and what sharding saves.

    python benchmarks/distributed.py --quick
    python benchmarks/distributed.py
    python benchmarks/distributed.py --steps 100 --framework torch --json distributed.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run_record import RunRecord  # beside this script

PRESET = "shakespeare-char-cpu"
QUICK_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32}
LEARNING_RATE = 1e-3
SEED = 0
SHARD_RATIO_TARGET = 0.55  # FSDP2's params + optimizer state per rank / one process's
TF_ROWS = ("tf-one", "tf-mirrored", "tf-multiworker")
MB = 2**20


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def median(values) -> float:
    values = sorted(values)
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2


def model_config(quick: bool):
    from course.config import get_preset

    return get_preset(PRESET, QUICK_MODEL if quick else None).model


# --------------------------------------------------------------------------------------
# PyTorch: one worker for the three rows, run by `launch` on 1 or 2 ranks
# --------------------------------------------------------------------------------------


def _local_bytes(tensor) -> int:
    if hasattr(tensor, "to_local"):  # a DTensor (FSDP2): this rank's shard only
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def torch_worker(rank, world_size, mode, config_dict, batch, warmup, steps, seed, lr):
    """`warmup` + `steps` AdamW steps of a GPT on this rank's share of each global batch
    (`mode`: "single", "ddp" or "fsdp2"). Rank 0 returns the per-step times (the slowest
    rank's), every rank's peak RSS and bytes of parameters and moments, and the losses."""
    import resource

    import torch
    import torch.distributed as dist

    from course.config import GPTConfig, TrainConfig
    from course.torch import distributed as D
    from course.torch.model import GPT
    from course.torch.train import configure_optimizer

    config = GPTConfig.from_dict(config_dict)
    torch.manual_seed(seed)
    model = GPT(config)
    if mode == "ddp":
        net = D.wrap_ddp(model)
    elif mode == "fsdp2":
        net = D.shard_model(model)
    else:
        net = model
    optimizer = configure_optimizer(model, TrainConfig(learning_rate=lr))
    data = torch.Generator().manual_seed(seed + 1)  # the same global batches on every rank
    times, losses = [], []
    for _ in range(warmup + steps):
        tokens = torch.randint(config.vocab_size, (batch, config.block_size + 1), generator=data)
        x, y = D.shard_batch(tokens[:, :-1], tokens[:, 1:], rank, world_size)
        if world_size > 1:
            dist.barrier()  # every rank starts the step together
        tick = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = net(x, y)[1]
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
        losses.append(loss.detach())
    times = torch.tensor(times, dtype=torch.float64)
    losses = torch.stack(losses)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)  # a step lasts until its slowest rank is done
    dist.all_reduce(losses)  # equal shares: the mean of the ranks' losses is the global one
    moments = [state[k] for state in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")]
    mine = {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "param_bytes": sum(_local_bytes(p) for p in model.parameters()),
        "optimizer_bytes": sum(_local_bytes(m) for m in moments),
    }
    ranks = [None] * world_size
    dist.all_gather_object(ranks, mine)
    return {
        "step_seconds": times[warmup:].tolist(),
        "ranks": ranks,
        "losses": (losses / world_size).tolist(),
    }


def torch_rows(config, args) -> list[dict]:
    from course.torch.launch import launch

    rows = []
    for name, mode, world_size in (
        ("PyTorch one process", "single", 1),
        ("PyTorch DDP", "ddp", 2),
        ("PyTorch FSDP2", "fsdp2", 2),
    ):
        started = time.perf_counter()
        result = launch(
            torch_worker, world_size, mode, config.to_dict(), args.batch, args.warmup,
            args.steps, SEED, LEARNING_RATE, threads_per_rank=1, timeout_s=300,
        )  # fmt: skip
        ranks = result["ranks"]
        rows.append({
            "setup": name, "framework": "torch", "processes": world_size, "replicas": world_size,
            "threads": 1, "optimizer": "AdamW",
            "step_ms": 1000 * median(result["step_seconds"]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
            "state_mb": max(r["param_bytes"] + r["optimizer_bytes"] for r in ranks) / MB,
            "last_loss": result["losses"][-1], "ranks": ranks,
            "seconds": time.perf_counter() - started,
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------
# TensorFlow: each row in its own process (logical CPUs are fixed when TensorFlow starts)
# --------------------------------------------------------------------------------------


def _variable_bytes(variables) -> int:
    import numpy as np

    return sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables if len(v.shape)
    )


def tf_fit_row(kind: str, config, args) -> dict:
    """Keras `fit` with AdamW on one device ("tf-one") or on 2 logical CPUs ("tf-mirrored")."""
    import resource

    import numpy as np

    from course import runtime

    keras = runtime.import_keras()
    from course.tf.data import make_dataset
    from course.tf.distributed import mirrored_strategy
    from course.tf.model import GPT

    tf = runtime.import_tensorflow()
    runtime.set_threads(1)  # before TensorFlow runs anything
    replicas = 2 if kind == "tf-mirrored" else 1
    strategy = mirrored_strategy(2) if replicas == 2 else tf.distribute.get_strategy()
    total = args.warmup + args.steps
    tokens = np.random.default_rng(SEED).integers(0, config.vocab_size, 200_000, dtype=np.uint16)
    dataset = make_dataset(tokens, args.batch, config.block_size, SEED, steps=total)
    with strategy.scope():
        keras.utils.set_random_seed(SEED)
        model = GPT(config)
        optimizer = keras.optimizers.AdamW(
            learning_rate=LEARNING_RATE, weight_decay=0.1, beta_1=0.9, beta_2=0.99
        )
        model.compile(optimizer=optimizer, jit_compile=False)

    class StepTimes(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends, self.losses = [], []

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.losses.append(float(logs["loss"]))  # waits for the step to finish
            self.ends.append(time.perf_counter())

    steps = StepTimes()
    model.fit(dataset, epochs=1, steps_per_epoch=total, callbacks=[steps], verbose=0,
              shuffle=False)  # fmt: skip
    intervals = [b - a for a, b in zip(steps.ends[:-1], steps.ends[1:], strict=True)]
    moments = [v for v in optimizer.variables if len(v.shape)]  # not the step, not the lr
    name = "TF one device" if replicas == 1 else "TF Mirrored 2 logical CPUs"
    return {
        "setup": name, "framework": "tf", "processes": 1, "replicas": replicas, "threads": 1,
        "optimizer": "AdamW", "step_ms": 1000 * median(intervals[args.warmup - 1 :]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "state_mb": (_variable_bytes(model.weights) + _variable_bytes(moments)) / MB,
        "last_loss": steps.losses[-1],
    }  # fmt: skip


def tf_multiworker_row(config, args) -> dict:
    """`run_multiworker` with 2 workers: short and long runs, the step time from their gap."""
    import resource

    import numpy as np

    from course.tf.distributed import run_multiworker

    tokens = np.random.default_rng(SEED).integers(0, config.vocab_size, 200_000, dtype=np.uint16)
    seconds = {"short": [], "long": []}
    last = None
    with tempfile.TemporaryDirectory(prefix="distributed-benchmark-") as scratch:
        for i in range(args.mw_repeats):
            for kind, steps in (("short", args.warmup), ("long", args.warmup + args.mw_steps)):
                last = run_multiworker(
                    config, tokens, Path(scratch) / f"{kind}{i}", n_workers=2, steps=steps,
                    global_batch_size=args.batch, learning_rate=LEARNING_RATE, seed=SEED,
                    threads=1, timeout=600.0,
                )  # fmt: skip
                seconds[kind].append(last.seconds)
    gap = min(seconds["long"]) - min(seconds["short"])
    return {
        "setup": "TF MultiWorker", "framework": "tf", "processes": 2, "replicas": 2,
        "threads": 1, "optimizer": "SGD",
        "step_ms": 1000 * gap / args.mw_steps if gap > 0 else None,  # None: lost in the noise
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "state_mb": sum(w.nbytes for w in last.weights) / MB, "last_loss": last.losses[-1],
        "run_seconds": seconds,
    }  # fmt: skip


def tf_row_in_subprocess(kind: str, argv: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as record:
        started = time.perf_counter()
        command = [sys.executable, __file__, *argv, "--tf-row", kind, "--json", record.name]
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
        noise = ("WARNING: All log messages before absl::InitializeLog()",
                 "oneDNN custom operations are on", "cpu_feature_guard.cc",
                 "To enable the following instructions")  # fmt: skip
        lines = done.stderr.splitlines()
        if done.returncode == 0:  # TensorFlow's start-up banner, printed by every process
            lines = [line for line in lines if not any(word in line for word in noise)]
        if lines:
            print("\n".join(lines), file=sys.stderr)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, command)
        row = json.loads(Path(record.name).read_text())
    return row | {"seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def report(rows: list[dict], config, args) -> dict:
    tokens = args.batch * config.block_size
    print(f"\n== global batch {args.batch} x {config.block_size} = {tokens} tokens; GPT "
          f"{config.n_layer} layers x {config.n_embd} wide; median of {args.steps} steps after "
          f"{args.warmup} warm-up steps\n")  # fmt: skip
    header = (f"{'setup':<28} {'ranks x thr':>11} {'opt':>5} {'step ms':>9} {'tokens/s':>9} "
              f"{'peak RSS/rank':>13} {'params+opt/rank':>15} {'last loss':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in rows:
        ms = row["step_ms"]
        row["tokens_per_sec"] = tokens / (ms / 1000) if ms else None
        speed = f"{ms:>9.1f} {row['tokens_per_sec']:>9,.0f}" if ms else f"{'n/a':>9} {'n/a':>9}"
        layout = f"{row['replicas']} x {row['threads']}"
        if row["processes"] != row["replicas"]:
            layout = f"{row['replicas']} dev x {row['threads']}"
        print(f"{row['setup']:<28} {layout:>11} {row['optimizer']:>5} {speed} "
              f"{row['peak_rss_mb']:>10.0f} MB {row['state_mb']:>12.3f} MB "
              f"{row['last_loss']:>9.4f}")  # fmt: skip
    print("\nTwo CPU cores cannot show a speed-up: 2 ranks x 1 thread against one process x 1 "
          "thread on the\nsame global batch is the fair comparison, and the ranks share the 2 "
          "cores with each other,\ntheir communication threads and everything else running on "
          "the machine.")  # fmt: skip
    by_name = {row["setup"]: row for row in rows}
    checks = {}
    one, fsdp = by_name.get("PyTorch one process"), by_name.get("PyTorch FSDP2")
    if one and fsdp:
        ratio = fsdp["state_mb"] / one["state_mb"]
        checks["fsdp2_state_ratio"] = {"value": ratio, "target": SHARD_RATIO_TARGET,
                                       "met": ratio <= SHARD_RATIO_TARGET}  # fmt: skip
        print(f"\nFSDP2 params + AdamW moments per rank {fsdp['state_mb']:.3f} MB / one "
              f"process's {one['state_mb']:.3f} MB = {ratio:.3f}   target <= "
              f"{SHARD_RATIO_TARGET}: {met(ratio <= SHARD_RATIO_TARGET)}")  # fmt: skip
        for name in ("PyTorch DDP", "PyTorch FSDP2"):
            if name in by_name:
                print(f"{name + ' step time':<26} {by_name[name]['step_ms'] / one['step_ms']:.2f}"
                      f"x one process's")  # fmt: skip
    mirrored, tf_one = by_name.get("TF Mirrored 2 logical CPUs"), by_name.get("TF one device")
    if mirrored and tf_one:
        print(f"{'TF Mirrored step time':<26} {mirrored['step_ms'] / tf_one['step_ms']:.2f}x "
              "one device's")  # fmt: skip
    if "TF MultiWorker" in by_name:
        s = by_name["TF MultiWorker"]["run_seconds"]
        pairs = [1000 * (b - a) / args.mw_steps for a, b in zip(s["short"], s["long"], strict=True)]
        print(f"TF MultiWorker step time: whole runs of {args.warmup} steps "
              f"{', '.join(f'{x:.1f}' for x in s['short'])} s and of "
              f"{args.warmup + args.mw_steps} steps {', '.join(f'{x:.1f}' for x in s['long'])} "
              f"s;\n  (fastest long - fastest short) / {args.mw_steps} steps; each pair alone "
              f"gives {', '.join(f'{x:.1f}' for x in pairs)} ms")  # fmt: skip
        if not by_name["TF MultiWorker"]["step_ms"]:
            print("  n/a: the long runs were not slower than the short ones; the steps' time is "
                  "lost in the\n  start-up noise (more --mw-steps, more --mw-repeats)")  # fmt: skip
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 2-layer GPT, 32 tokens, --steps 10, --warmup 3, --mw-steps 150, "
                        "--mw-repeats 1")  # fmt: skip
    parser.add_argument("--framework", choices=("torch", "tf", "both"), default="both")
    parser.add_argument("--batch", type=int, default=8, help="global batch, sequences (8)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (40)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (5)")
    parser.add_argument("--mw-steps", type=int, default=None,
                        help="extra steps of run_multiworker's long run (200)")  # fmt: skip
    parser.add_argument("--mw-repeats", type=int, default=None,
                        help="short/long run pairs of run_multiworker (2)")  # fmt: skip
    parser.add_argument("--json", default=None, help="write the rows and checks to this file")
    parser.add_argument("--tf-row", choices=TF_ROWS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (10 if args.quick else 40)
    args.warmup = args.warmup or (3 if args.quick else 5)
    args.mw_steps = args.mw_steps or (150 if args.quick else 200)
    args.mw_repeats = args.mw_repeats or (1 if args.quick else 2)
    if args.batch % 2:
        parser.error(f"--batch must be even (2 ranks take equal halves), got {args.batch}")
    if args.warmup < 2:
        parser.error("--warmup must be >= 2 (the first step holds tracing and allocation)")
    config = model_config(args.quick)

    if args.tf_row:  # one TensorFlow row, in this fresh process
        if args.tf_row == "tf-multiworker":
            row = tf_multiworker_row(config, args)
        else:
            row = tf_fit_row(args.tf_row, config, args)
        Path(args.json).write_text(json.dumps(row))
        return

    run = RunRecord()
    rows = []
    if args.framework in ("torch", "both"):
        rows += torch_rows(config, args)
    if args.framework in ("tf", "both"):
        argv = [a for a in sys.argv[1:]]
        if "--json" in argv:  # the children write their own record
            i = argv.index("--json")
            del argv[i : i + 2]
        argv = [a for a in argv if not a.startswith("--json=")]
        rows += [tf_row_in_subprocess(kind, argv) for kind in TF_ROWS]
    checks = report(rows, config, args)
    finished = run.finish()
    if args.json:
        record = {"rows": rows, "checks": checks, "model": config.to_dict(), "batch": args.batch,
                  "steps": args.steps, "warmup": args.warmup, "mw_steps": args.mw_steps,
                  "mw_repeats": args.mw_repeats,
                  **finished}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

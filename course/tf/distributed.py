"""Data-parallel training with `tf.distribute`: the TensorFlow half of the distributed chapter.

Every replica holds a copy of the weights, computes gradients on its part of each batch, and
an all-reduce sums the replicas' gradients before each one applies the same update. Tested
here on one CPU; the same code runs on GPUs and across machines.

    from course.tf.distributed import mirrored_strategy, fit_on_strategy, run_multiworker
    strategy = mirrored_strategy(2)                       # 2 logical CPUs: call it first
    model, losses = fit_on_strategy(config, dataset, strategy, steps=100)
    result = run_multiworker(config, tokens, "out/mw")   # 2 processes on 127.0.0.1

Two strategies, two idioms:

- `MirroredStrategy`: several devices in one process. Keras `fit` works with it: build and
  compile the model inside `strategy.scope()`, and `fit` splits each global batch over the
  replicas (`fit_on_strategy`).
- `MultiWorkerMirroredStrategy`: one process per worker, found through the TF_CONFIG
  environment variable. Keras `fit` fails with it on this stack (TF 2.21, Keras 3.15); a
  custom loop with `strategy.run` works (`custom_loop`, run by `run_multiworker`).

The classic bug: Keras' optimizer *sums* the replicas' gradients (an all-reduce SUM), so each
replica's loss must be its examples' losses divided by the *global* batch size
(`tf.nn.compute_average_loss(per_example_loss, global_batch_size=...)`). A per-replica
`tf.reduce_mean` instead gives n_replicas times the gradient with equal shares, and wrong
weights with unequal ones (`per_replica_mean_loss`, shown by `replica_gradients`).
`course.tf.model.GPT.train_step` does it right under any strategy (its `_replica_step`
divides by the count of all replicas' counted tokens), so `fit` works as it is.

TensorFlow fixes its devices when it first uses them, so `logical_cpus` must run before any
TensorFlow operation in the process (tests and notebooks run it in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from course import runtime
from course.checks import check_int
from course.config import GPTConfig
from course.data import as_token_array, check_batch_args
from course.files import replace_atomically, write_json
from course.tf.data import make_dataset
from course.tf.model import GPT

keras = runtime.import_keras()
tf = runtime.import_tensorflow()

LOOPBACK = "127.0.0.1"
MODULE = "course.tf.distributed"  # run as `python -m course.tf.distributed worker ...`
JOB, TOKENS, RESULT, LOSSES = "job.json", "tokens.npy", "weights.npz", "losses.json"
FAILED_WORKER_EXIT = 3  # the exit code of a worker told to fail (`fail_worker`)
_GRACE = 5.0  # seconds a stopped worker gets between SIGTERM and SIGKILL
_PROJECT = Path(runtime.__file__).resolve().parents[1]  # the folder holding `course`

# --------------------------------------------------------------------------------------
# Devices and strategies
# --------------------------------------------------------------------------------------


def logical_cpus(n: int = 2) -> list[str]:
    """Split the CPU into `n` logical devices and return their names ('/cpu:0', ...).

    Only possible before TensorFlow initialises its devices (its first operation does):
    call this first in a fresh process. Calling it again with the same or a smaller `n`
    is harmless; asking for more devices once TensorFlow runs is a RuntimeError that says so.
    """
    check_int("n", n, 1)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as err:  # devices already initialised
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise RuntimeError(
                f"logical_cpus({n}): TensorFlow already initialised its devices with {have} "
                f"logical CPU(s) and cannot change them ({err}). Call logical_cpus (or "
                "mirrored_strategy) first, before any TensorFlow operation, or run in a fresh "
                "process (restart the kernel)."
            ) from None
    return [f"/cpu:{i}" for i in range(n)]


def mirrored_strategy(n: int = 2, cross_device_ops=None) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy over `n` logical CPUs (see `logical_cpus`: call it first).

    The all-reduce defaults to `ReductionToOneDevice`, which works on any device; on this
    CPU `HierarchicalCopyAllReduce` works too, while NCCL (MirroredStrategy's choice on
    GPUs) needs GPUs. On GPUs, `tf.distribute.MirroredStrategy()` takes them all; the
    training code stays the same.
    """
    devices = logical_cpus(n)
    if cross_device_ops is None:
        cross_device_ops = tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)


def multiworker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """A MultiWorkerMirroredStrategy for this process, from TF_CONFIG, with ring all-reduce
    (gRPC: works on CPUs; NCCL needs GPUs). Blocks until every worker has started."""
    if "TF_CONFIG" not in os.environ:
        raise RuntimeError(
            "TF_CONFIG is not set: each worker needs it (see `tf_config`); without it "
            "MultiWorkerMirroredStrategy trains alone in this process"
        )
    ring = tf.distribute.experimental.CommunicationImplementation.RING
    options = tf.distribute.experimental.CommunicationOptions(implementation=ring)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def free_ports(n: int = 2, host: str = LOOPBACK) -> list[int]:
    """`n` TCP ports free on `host` right now (the system picks them; held until all are
    picked, so they differ). Another process may still take one before a worker binds it."""
    check_int("n", n, 1)
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: Sequence[int], index: int, host: str = LOOPBACK) -> dict:
    """The TF_CONFIG of worker `index` in a cluster of workers on `host`:`ports` (worker 0
    is the chief). Set it as json.dumps(...) in the worker's environment."""
    check_int("index", index, 0)
    if index >= len(ports):
        raise ValueError(f"index must be < the number of workers ({len(ports)}), got {index}")
    workers = [f"{host}:{port}" for port in ports]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}


# --------------------------------------------------------------------------------------
# Losses: the right one, and the classic mistake
# --------------------------------------------------------------------------------------


def per_example_loss(targets, logits):
    """Cross-entropy per sequence: logits (B, T, V), targets (B, T) -> (B,), each the mean
    over its T tokens. Every target counts (no ignored -1 here): the windows trained on
    have none, and then the mean over the batch is `lm_loss`."""
    targets = tf.cast(targets, tf.int32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_mean(losses, axis=-1)  # (B,)


def replica_loss(targets, logits, global_batch_size):
    """This replica's share of the global mean loss: the sum of its examples' losses
    divided by the *global* batch size. Summed over the replicas (as the optimizer sums
    their gradients) it is the mean over the global batch, however the batch was split."""
    return tf.nn.compute_average_loss(
        per_example_loss(targets, logits), global_batch_size=global_batch_size
    )


def per_replica_mean_loss(targets, logits):
    """THE CLASSIC MISTAKE, kept to be shown: the mean over this replica's examples only.

    With n equal shares and gradients summed across replicas it gives n times the right
    gradient; with unequal shares (the last batch of an epoch) it weighs the examples of
    the smaller share more, whatever the reduction. Use `replica_loss`.
    """
    return tf.reduce_mean(per_example_loss(targets, logits))


LOSS_KINDS = ("global", "per_replica_mean")  # replica_loss, per_replica_mean_loss


def replica_gradients(
    model: GPT,
    shards: Sequence[tuple],
    strategy=None,
    *,
    loss: str = "global",
    reduction: str = "sum",
) -> list[np.ndarray]:
    """The gradients each replica ends up with: replica i takes shards[i] = (x, y), computes
    its loss (`loss`: "global" = `replica_loss`, "per_replica_mean" = the mistake), and the
    replicas' gradients are all-reduced with `reduction` ("sum", as Keras' optimizers do,
    or "mean"). Shards may differ in size. `strategy` None = one device, one shard.

    Returns numpy arrays in the order of `model.trainable_variables`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if loss not in LOSS_KINDS:
        raise ValueError(f"loss must be one of {LOSS_KINDS}, got {loss!r}")
    reductions = {"sum": tf.distribute.ReduceOp.SUM, "mean": tf.distribute.ReduceOp.MEAN}
    if reduction not in reductions:
        raise ValueError(f"reduction must be one of {sorted(reductions)}, got {reduction!r}")
    n = strategy.num_replicas_in_sync
    if len(shards) != n:
        raise ValueError(f"shards must hold one (x, y) per replica ({n}), got {len(shards)}")
    global_batch_size = sum(int(np.shape(x)[0]) for x, _ in shards)
    xs = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(shards[ctx.replica_id_in_sync_group][0])
    )
    ys = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(shards[ctx.replica_id_in_sync_group][1])
    )

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            if loss == "global":
                value = replica_loss(y, logits, global_batch_size)
            else:
                value = per_replica_mean_loss(y, logits)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(value, model.trainable_variables)]
        return tf.distribute.get_replica_context().all_reduce(reductions[reduction], grads)

    grads = tf.function(lambda x, y: strategy.run(step, args=(x, y)))(xs, ys)
    return [np.asarray(strategy.experimental_local_results(g)[0]) for g in grads]


# --------------------------------------------------------------------------------------
# MirroredStrategy: Keras fit
# --------------------------------------------------------------------------------------


def build_gpt(
    config: GPTConfig,
    strategy=None,
    *,
    learning_rate: float = 0.1,
    seed: int = 0,
    weights: Sequence[np.ndarray] | None = None,
) -> GPT:
    """A `GPT` built and compiled (plain SGD) inside `strategy.scope()`, its
    weights drawn from `seed` (`keras.utils.set_random_seed`, which also seeds NumPy and
    Python) or copied from `weights` (as `get_weights()` lists them). `strategy` None =
    the default strategy: one device."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        keras.utils.set_random_seed(seed)
        model = GPT(config)
        if weights is not None:
            model.set_weights(list(weights))
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=learning_rate), jit_compile=False
        )
    return model


def fit_on_strategy(
    config: GPTConfig,
    dataset: tf.data.Dataset,
    strategy=None,
    *,
    steps: int = 1,
    learning_rate: float = 0.1,
    seed: int = 0,
    weights: Sequence[np.ndarray] | None = None,
) -> tuple[GPT, list[float]]:
    """Build and compile the GPT inside `strategy.scope()` (`build_gpt`) and `fit` it for
    `steps` steps on `dataset`, whose elements are global batches (x, y), each (B, T):
    `fit` splits every batch over the replicas. Returns the model and the loss per step."""
    check_int("steps", steps, 1)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise NotImplementedError(
            "Keras fit fails under MultiWorkerMirroredStrategy on this stack (TF 2.21, Keras "
            "3.15: 'Attempt to convert a value (PerReplica...) to a Tensor'); train with "
            "custom_loop (strategy.run), as run_multiworker's workers do"
        )
    model = build_gpt(config, strategy, learning_rate=learning_rate, seed=seed, weights=weights)
    losses = _LossPerStep()
    model.fit(
        dataset, epochs=1, steps_per_epoch=steps, callbacks=[losses], verbose=0, shuffle=False
    )
    return model, losses.losses


class _LossPerStep(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.losses.append(float(logs["loss"]))


# --------------------------------------------------------------------------------------
# A custom loop with strategy.run (MultiWorkerMirroredStrategy, or any other)
# --------------------------------------------------------------------------------------


def custom_loop(
    strategy,
    config: GPTConfig,
    tokens,
    *,
    steps: int,
    global_batch_size: int,
    learning_rate: float,
    seed: int,
    fail_at_step: int | None = None,
) -> tuple[GPT, list[float]]:
    """Train a GPT with SGD for `steps` steps under `strategy`, written out: every step
    reads the same global batch (`make_dataset(tokens, global_batch_size, ..., seed)`),
    each input pipeline (one per worker) takes its rows, each replica computes
    `replica_loss` on its share, and the optimizer sums the gradients. The result does
    not depend on the number of replicas. Returns the model and the global loss per step.

    `fail_at_step` exits the process before that step (to test what a dying worker does).
    """
    check_int("steps", steps, 1)
    n = strategy.num_replicas_in_sync
    if global_batch_size % n:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be divisible by the number of "
            f"replicas ({n})"
        )
    tokens = as_token_array(tokens)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        pipelines = context.num_input_pipelines  # one per worker
        rows = global_batch_size // pipelines
        first = context.input_pipeline_id * rows
        batches = make_dataset(tokens, global_batch_size, config.block_size, seed, steps=steps)
        mine = batches.map(lambda x, y: (x[first : first + rows], y[first : first + rows]))
        per_replica = context.get_per_replica_batch_size(global_batch_size)
        return mine.unbatch().batch(per_replica, drop_remainder=True)

    with strategy.scope():
        keras.utils.set_random_seed(seed)
        model = GPT(config)
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
        optimizer.build(model.trainable_variables)
    batches = iter(strategy.distribute_datasets_from_function(dataset_fn))

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = replica_loss(y, model(x, training=True), global_batch_size)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
        optimizer.apply(grads, model.trainable_variables)  # all-reduce SUM, then SGD
        return loss

    @tf.function
    def train_step(x, y):
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    losses = []
    for step in range(steps):
        if fail_at_step is not None and step >= fail_at_step:
            print(f"failing on purpose before step {step} (fail_at_step)", file=sys.stderr)
            sys.stderr.flush()
            os._exit(FAILED_WORKER_EXIT)  # a crash: no clean-up, no goodbye to the others
        x, y = next(batches)
        losses.append(float(train_step(x, y)))
    return model, losses


def train_one_process(
    config: GPTConfig,
    tokens,
    *,
    steps: int = 2,
    global_batch_size: int = 4,
    learning_rate: float = 0.1,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[float]]:
    """`custom_loop` on one device: the reference the workers must reproduce. Returns the
    final weights (as `model.get_weights()` lists them) and the loss per step."""
    model, losses = custom_loop(
        tf.distribute.get_strategy(),
        config,
        tokens,
        steps=steps,
        global_batch_size=global_batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )
    return model.get_weights(), losses


# --------------------------------------------------------------------------------------
# MultiWorkerMirroredStrategy: one process per worker
# --------------------------------------------------------------------------------------


@dataclass
class MultiWorkerResult:
    """What the chief wrote: the final weights (`get_weights()` order), the loss per step."""

    weights: list[np.ndarray]
    losses: list[float]
    out_dir: Path
    seconds: float


class WorkerError(RuntimeError):
    """A worker failed or hung; the other workers were stopped. `worker` is its index."""

    def __init__(self, message: str, worker: int) -> None:
        super().__init__(message)
        self.worker = worker


def run_worker(out_dir: str | os.PathLike[str], fail_at_step: int | None = None) -> None:
    """The body of one worker process (`python -m course.tf.distributed worker OUT_DIR`):
    read the job that `run_multiworker` wrote and TF_CONFIG, train with `custom_loop`
    under MultiWorkerMirroredStrategy; the chief (worker 0) writes the results."""
    out = Path(out_dir)
    job = json.loads((out / JOB).read_text())
    runtime.set_threads(job["threads"])  # before anything runs in TensorFlow
    strategy = multiworker_strategy()
    is_chief = strategy.cluster_resolver.task_id == 0  # worker 0
    model, losses = custom_loop(
        strategy,
        GPTConfig.from_dict(job["config"]),
        np.load(out / TOKENS),
        steps=job["steps"],
        global_batch_size=job["global_batch_size"],
        learning_rate=job["learning_rate"],
        seed=job["seed"],
        fail_at_step=fail_at_step,
    )
    if is_chief:
        weights = {f"w{i:04d}": w for i, w in enumerate(model.get_weights())}
        replace_atomically(out / RESULT, lambda f: np.savez(f, **weights))
        write_json(out / LOSSES, {"losses": losses})  # written last: the results are complete


def run_multiworker(
    config: GPTConfig,
    tokens,
    out_dir: str | os.PathLike[str],
    *,
    n_workers: int = 2,
    steps: int = 2,
    global_batch_size: int = 4,
    learning_rate: float = 0.1,
    seed: int = 0,
    threads: int = 1,
    timeout: float = 120.0,
    ports: Sequence[int] | None = None,
    fail_worker: int | None = None,
    fail_at_step: int = 0,
) -> MultiWorkerResult:
    """Train on `n_workers` local processes with MultiWorkerMirroredStrategy and return
    what the chief wrote to `out_dir` (the same numbers as `train_one_process`).

    Each worker is `python -m course.tf.distributed worker OUT_DIR` with its TF_CONFIG
    (loopback, `ports` or free ones) and `threads` threads; its output goes to
    OUT_DIR/worker-N.log. If a worker exits with an error, or the workers are still
    running after `timeout` seconds, every worker still running is stopped (SIGTERM, then
    SIGKILL) and a `WorkerError` names the worker. `fail_worker` makes that worker crash
    before step `fail_at_step`, to see it happen.
    """
    check_int("n_workers", n_workers, 1)
    check_int("threads", threads, 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    tokens = as_token_array(tokens)
    check_batch_args(len(tokens), global_batch_size, config.block_size, seed=seed, steps=steps)
    if global_batch_size % n_workers:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be divisible by n_workers ({n_workers})"
        )
    if fail_worker is not None and not 0 <= fail_worker < n_workers:
        raise ValueError(f"fail_worker must be in 0..{n_workers - 1} or None, got {fail_worker}")
    ports = list(ports) if ports is not None else free_ports(n_workers)
    if len(ports) != n_workers:
        raise ValueError(f"ports must hold n_workers ({n_workers}) ports, got {len(ports)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (RESULT, LOSSES):
        (out / name).unlink(missing_ok=True)
    replace_atomically(out / TOKENS, lambda f: np.save(f, tokens))
    job = {
        "config": config.to_dict(),
        "steps": steps,
        "global_batch_size": global_batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "threads": threads,
    }
    write_json(out / JOB, job)

    started = time.monotonic()
    commands = []
    for index in range(n_workers):
        command = [sys.executable, "-m", MODULE, "worker", str(out)]
        if index == fail_worker:
            command += ["--fail-at-step", str(fail_at_step)]
        commands.append(command)
    run_workers(commands, ports, out, started + timeout, timeout)
    if not (out / LOSSES).is_file():
        raise WorkerError(f"the chief (worker 0) exited without writing {out / LOSSES}", 0)
    with np.load(out / RESULT) as saved:
        weights = [saved[name] for name in sorted(saved.files)]
    losses = json.loads((out / LOSSES).read_text())["losses"]
    return MultiWorkerResult(weights, losses, out, time.monotonic() - started)


WORKER_THREADS = 130  # threads of one TF worker at threads=1 (measured ~125: gRPC's pools)


def thread_limit_problem(n_workers: int) -> str | None:
    """Why this process cannot start `n_workers` TensorFlow workers, or None: each needs
    ~WORKER_THREADS threads, and a low limit of processes and threads per user
    (RLIMIT_NPROC, as a grading sandbox sets) makes a worker abort while it starts."""
    check_int("n_workers", n_workers, 1)
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    need = n_workers * WORKER_THREADS + 64  # and this process's own threads
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    return (
        f"this process may run at most {soft} processes and threads (RLIMIT_NPROC: a "
        f"sandbox's limit?), and {n_workers} TensorFlow workers need about {need} (gRPC's "
        "thread pools): run them where the limit is higher (`ulimit -u`)"
    )


def run_workers(
    commands: Sequence[Sequence[str]],
    ports: Sequence[int],
    logs_dir: Path,
    deadline: float,
    timeout: float,
) -> None:
    """Start worker i as `commands[i]` with its TF_CONFIG (workers on 127.0.0.1:`ports`),
    its output in logs_dir/worker-i.log, and wait for all (`_wait_for`: the first that
    fails, or `deadline` (time.monotonic) passing, stops every one and raises WorkerError).
    No worker outlives the call. RuntimeError before anything starts if the limit of
    processes and threads is too low for them (`thread_limit_problem`)."""
    problem = thread_limit_problem(len(commands))
    if problem is not None:
        raise RuntimeError(problem)
    workers: list[subprocess.Popen] = []
    logs = []
    try:
        for index, command in enumerate(commands):
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config(ports, index))}
            env["PYTHONPATH"] = os.pathsep.join(  # the same `course` from any folder
                [str(_PROJECT), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            env.setdefault("OMP_NUM_THREADS", "1")  # the workers share the cores
            env["LOCAL_WORLD_SIZE"] = str(len(commands))  # set_threads(0): cores / workers
            logs.append((logs_dir / f"worker-{index}.log").open("wb"))
            workers.append(
                subprocess.Popen(
                    list(command),
                    env=env,
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stopped with its children
                )
            )
        _wait_for(workers, logs_dir, deadline, timeout)
    finally:
        _stop(workers)
        for log in logs:
            log.close()


def _wait_for(workers: list[subprocess.Popen], out: Path, deadline: float, timeout: float):
    """Return when every worker exited with 0; raise WorkerError at the first failure or
    at the deadline."""
    while True:
        for index, worker in enumerate(workers):
            code = worker.poll()
            if code not in (None, 0):
                raise WorkerError(
                    f"worker {index} (pid {worker.pid}) exited with code {code}; stopped the "
                    f"other workers. Its log, {out / f'worker-{index}.log'}, ends with:\n"
                    f"{_tail(out / f'worker-{index}.log')}",
                    index,
                )
        running = [index for index, worker in enumerate(workers) if worker.poll() is None]
        if not running:
            return
        if time.monotonic() > deadline:
            index = running[0]
            raise WorkerError(
                f"worker {index} (pid {workers[index].pid}) still running after {timeout:g} s "
                f"(workers still running: {running}); stopped them all. Its log ends with:\n"
                f"{_tail(out / f'worker-{index}.log')}",
                index,
            )
        time.sleep(0.1)


def _stop(workers: list[subprocess.Popen]) -> None:
    """Stop every worker still running, with its process group: SIGTERM, then SIGKILL."""
    for worker in workers:
        if worker.poll() is None:
            _signal_group(worker, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(worker, signal.SIGKILL)  # not yet reaped: the group is still ours
            worker.wait()


def _signal_group(worker: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(worker.pid, sig)  # the group started with the worker (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=runtime.command_name(MODULE),
        description="One worker of run_multiworker (TF_CONFIG says which).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="train as one worker; the chief writes results")
    worker.add_argument("out_dir", help="the folder run_multiworker wrote job.json to")
    worker.add_argument("--fail-at-step", type=int, default=None, help="crash before this step")
    args = parser.parse_args(argv)
    run_worker(args.out_dir, fail_at_step=args.fail_at_step)


if __name__ == "__main__":
    main()

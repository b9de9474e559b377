"""Train the Keras GPT the Keras way: `compile` + `fit`, with callbacks doing the rest.

    from course.config import get_preset
    from course.tf.train import train, load_model
    result = train(get_preset("shakespeare-char-cpu"), "out/keras")
    model, tokenizer = load_model("out/keras")        # for course.tf.generate

The recipe is the PyTorch trainer's (course.torch.train), expressed in Keras:

- the learning rate is a `LearningRateSchedule` computing `course.config.lr_at` in
  TensorFlow ops (the optimizer evaluates it at its own step counter);
- AdamW decays matrices only (`exclude_from_weight_decay` for the 1-D weights) and
  clips the global gradient norm (`global_clipnorm`);
- with `grad_accum` > 1 each element of the dataset is a stack of micro-batches
  (accum, B, T), and `GPT.train_step` averages their gradients before one update;
- `GPT.train_step` runs inside a tf.function, XLA-compiled (`jit_compile=True`) unless
  `jit_compile=False`; `run_eagerly=True` runs it line by line for debugging;
- the batches are chapter 03's `make_dataset`: identical to the PyTorch trainer's;
- a callback logs metrics (metrics.jsonl, metrics.csv, TensorBoard under tb/), evaluates
  and writes the checkpoint: ckpt/ with model.weights.h5, optimizer.npz and state.json.

A checkpoint is never changed in place, so a run killed at any instant (kill -9, twice in
a row) keeps one that `load_checkpoint` finds. Each save writes a new numbered folder
beside the others (.ckpt-000007/), state.json last: a folder with state.json is complete.
The link ckpt -> .ckpt-000007 is then replaced in one atomic rename, and only after that
are the older folders removed (state.json first, so a half-removed one is incomplete).
`load_checkpoint` takes the newest complete folder: the one ckpt names, or a newer one a
killed save completed but did not link. A ckpt/ that is a real folder (written by an
earlier version of this module, which swapped folders by renames) is found after the
numbered ones, then .ckpt-old/; the next save replaces it with the link.

Data-parallel (chapter 09): `train(..., strategy=...)` builds the model and its optimizer
inside `strategy.scope()` and trains on the same global batches as one process, each replica
on an equal slice of every batch (batch_size must divide by the number of replicas):

- `MirroredStrategy` (`course.tf.distributed.mirrored_strategy(n)`: n replicas in one
  process): `fit` splits each batch, and `GPT.train_step` divides by all replicas' tokens;
- `MultiWorkerMirroredStrategy` (one process per worker, from TF_CONFIG): `fit` fails on this
  stack, so a loop written out runs `strategy.run(model.train_step)` on each worker's rows
  of every batch, and drives the same callback (logs, evaluation, checkpoints). Every worker
  evaluates the same batches; only the chief (worker 0) writes to out_dir.

Keras clips the global gradient norm of each replica's *partial* gradient before its
all-reduce; under a strategy the optimizer sums the replicas' gradients first and clips the
sum (`_AllReducedClipping`), as one process does. `grad_accum` > 1 is refused under a strategy
(raise batch_size instead), and the step runs without XLA (`jit_compile` is ignored).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from course import runtime
from course.adapters import ADAPTER_FILE, check_fine_tuning_base, check_resumed_lora, run_lora
from course.config import GPTConfig, Preset, TrainConfig, check_resumed_optimizer, lr_at
from course.data import (
    check_int,
    check_tokens,
    corpus_tokens,
    eval_seed,
    get_batch,
    split_windows,
)
from course.files import replace_atomically, write_json, write_text
from course.metrics import (
    KERAS_CHECKPOINT,
    METRICS,
    EventLog,
    peak_rss_mb,
    progress_bar,
    run_summary,
)
from course.tf.data import make_dataset
from course.tf.model import GPT, lm_loss
from course.tokenizers import tokenizer_from_state, tokenizer_state

keras = runtime.import_keras()
tf = runtime.import_tensorflow()

CHECKPOINT = KERAS_CHECKPOINT  # the checkpoint folder in a run's out_dir
WEIGHTS, OPTIMIZER, STATE = "model.weights.h5", "optimizer.npz", "state.json"  # its files
METRICS_CSV = "metrics.csv"  # the event log as a table, written at the end
_SIDE = f".{CHECKPOINT}-"  # the prefix of the numbered folders, and of all a save leaves
_NUMBERED = re.compile(rf"{re.escape(_SIDE)}(\d+)")  # .ckpt-000007: the 7th save
_LINK = f"{_SIDE}link"  # the new link, before it replaces ckpt
_LEGACY = f"{_SIDE}old"  # earlier versions' previous checkpoint, while they swapped folders

# --------------------------------------------------------------------------------------
# Schedule and optimizer
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="course")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """`course.config.lr_at` in TensorFlow ops: linear warm-up, cosine, then flat."""

    def __init__(self, learning_rate, min_lr, warmup_iters, lr_decay_iters, progress=None):
        self.learning_rate, self.min_lr = float(learning_rate), float(min_lr)
        self.warmup_iters, self.lr_decay_iters = int(warmup_iters), int(lr_decay_iters)
        # A time-budgeted run's fraction of the budget used (a float64 tf.Variable the
        # trainer updates after each step): the cosine follows it, as lr_at's `progress`.
        self.progress = progress

    @classmethod
    def from_train_config(cls, train_cfg: TrainConfig, progress=None) -> WarmupCosine:
        t = train_cfg
        return cls(t.learning_rate, t.min_lr, t.warmup_iters, t.lr_decay_iters, progress)

    def __call__(self, step):
        step = tf.cast(step, tf.float64)
        peak, low = self.learning_rate, tf.constant(self.min_lr, tf.float64)
        warm = peak * (step + 1.0) / max(self.warmup_iters, 1)
        if self.progress is not None:
            position = tf.clip_by_value(tf.cast(self.progress, tf.float64), 0.0, 1.0)
            cosine = low + 0.5 * (1.0 + tf.cos(math.pi * position)) * (peak - low)
            return tf.cast(tf.where(step < self.warmup_iters, warm, cosine), tf.float32)
        span = max(self.lr_decay_iters - self.warmup_iters, 1)
        progress = tf.clip_by_value((step - self.warmup_iters) / span, 0.0, 1.0)
        cosine = low + 0.5 * (1.0 + tf.cos(math.pi * progress)) * (peak - low)
        if self.lr_decay_iters <= self.warmup_iters:  # no room to decay (lr_at agrees)
            cosine = low
        lr = tf.where(step < self.warmup_iters, warm, cosine)
        lr = tf.where(step >= max(self.lr_decay_iters, self.warmup_iters), low, lr)
        return tf.cast(lr, tf.float32)

    def get_config(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "min_lr": self.min_lr,
            "warmup_iters": self.warmup_iters,
            "lr_decay_iters": self.lr_decay_iters,
        }


class _AllReducedClipping(keras.optimizers.AdamW):
    """AdamW that, with several replicas, sums their gradients *before* clipping the global
    norm, so the clip sees the whole batch's gradient as on one device. (Keras clips each
    replica's partial gradient, then sums: a different update whenever clipping acts.) The
    sum happens in `_clip_gradients`; the all-reduce Keras runs afterwards is then skipped."""

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if _several_replicas(context):
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if _several_replicas(tf.distribute.get_replica_context()):
            return list(grads_and_vars)  # summed already, in _clip_gradients
        return super()._all_reduce_sum_gradients(grads_and_vars)


def _several_replicas(context) -> bool:
    """In a replica context (inside strategy.run) of a strategy with several replicas."""
    if context is None or not tf.distribute.has_strategy():
        return False
    return context.num_replicas_in_sync > 1


def configure_optimizer(model: GPT, train_cfg: TrainConfig, progress=None):
    """AdamW as in the PyTorch trainer: decay on matrices only, global-norm clipping (of the
    whole batch's gradient, also when a strategy splits the batch over replicas).

    With train_cfg.optimizer "muon": `keras.optimizers.Muon`, Muon on the blocks' matrices
    and Adam with decoupled decay on the embeddings and the vectors (as the PyTorch
    trainer's `MuonAdamW`; one device only). `progress`: WarmupCosine's, for a time budget.
    """
    t = train_cfg
    vectors = [v for v in model.trainable_variables if len(v.shape) < 2]
    if t.optimizer == "muon":
        optimizer = keras.optimizers.Muon(
            learning_rate=WarmupCosine.from_train_config(t, progress),
            weight_decay=t.weight_decay,
            adam_weight_decay=t.weight_decay,
            adam_beta_1=t.beta1,
            adam_beta_2=t.beta2,
            epsilon=1e-8,  # PyTorch's default (Keras' is 1e-7)
            global_clipnorm=t.grad_clip if t.grad_clip > 0 else None,
            exclude_embeddings=True,  # wte and wpe (the tied head with wte): Adam
            momentum=MUON_MOMENTUM,
            nesterov=True,
            rms_rate=0.2,  # updates the size of AdamW's: PyTorch's "match_rms_adamw"
            name="muon",
        )
        optimizer.exclude_from_weight_decay(var_list=vectors)
        return optimizer
    optimizer = _AllReducedClipping(
        learning_rate=WarmupCosine.from_train_config(t, progress),
        weight_decay=t.weight_decay,
        beta_1=t.beta1,
        beta_2=t.beta2,
        epsilon=1e-8,  # PyTorch's default (Keras' is 1e-7)
        global_clipnorm=t.grad_clip if t.grad_clip > 0 else None,
        name="adamw",  # AdamW's own (the class name is not a valid scope name)
    )
    optimizer.exclude_from_weight_decay(var_list=vectors)  # LayerNorm gains, biases
    return optimizer


MUON_MOMENTUM = 0.95  # as the PyTorch trainer's


# --------------------------------------------------------------------------------------
# Evaluation and checkpoints
# --------------------------------------------------------------------------------------


def estimate_loss(
    model: GPT,
    splits: dict[str, np.ndarray],
    batch_size: int,
    block_size: int,
    eval_iters: int,
    seed: int,
) -> dict[str, float]:
    """Mean loss over `eval_iters` batches per split, drawn exactly as the PyTorch
    trainer draws them (np.random.default_rng(seed)), in inference mode."""
    rng = np.random.default_rng(seed)
    traced = model.__dict__.setdefault("_eval_loss", {})  # (batch, block) -> traced loss
    loss_of = traced.get((batch_size, block_size))
    if loss_of is None:  # one traced function per model and shape, reused at every evaluation
        spec = tf.TensorSpec((batch_size, block_size), tf.int64)
        loss_of = tf.function(
            lambda x, y: lm_loss(y, model(x, training=False)), input_signature=[spec, spec]
        )
        traced[(batch_size, block_size)] = loss_of
    out = {}
    for name, data in splits.items():
        losses = [float(loss_of(*get_batch(data, batch_size, block_size, rng))) for _ in
                  range(eval_iters)]  # fmt: skip
        out[name] = float(np.mean(losses))
    return out


def full_split_loss(model: GPT, data, block_size: int, batch_size: int = 64) -> float:
    """The mean loss over every target of `data` (`course.data.split_windows`), in
    inference mode, batch_size windows at a time, summed in float64 (as the PyTorch
    trainer's `full_split_loss`)."""
    check_int("batch_size", batch_size, 1)
    x, y = split_windows(data, block_size)
    total, counted = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        n = int((yb != -1).sum())
        total += float(lm_loss(yb, model(xb, training=False))) * n  # the mean over n
        counted += n
    return total / counted


def save_checkpoint(out_dir: str | os.PathLike[str], model: GPT, optimizer, **state) -> Path:
    """Write a new checkpoint (weights, optimizer variables, state.json) and make
    out_dir/ckpt name it; return out_dir/ckpt.

    Killed at any instant, this leaves a complete checkpoint that `load_checkpoint` finds:
    the previous one until the new one is complete, the new one after (see the module's
    docstring). NaN or infinite numbers in `state` are stored as null.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = out / f"{_SIDE}{_last_number(out) + 1:06d}"
    _write_checkpoint(folder, model, optimizer, state)
    _link(out, folder)
    for path in out.iterdir():  # the older checkpoints, and what killed saves left
        if path.name.startswith(_SIDE) and path != folder:
            _remove(path)
    return out / CHECKPOINT


def _write_checkpoint(folder: Path, model: GPT, optimizer, state: dict) -> None:
    """The checkpoint's files in the new `folder`, each synced to disk; state.json last,
    once the others are in place: it marks the folder complete."""
    folder.mkdir()
    model.save_weights(str(folder / WEIGHTS))  # Keras needs a file name ending in .weights.h5
    with (folder / WEIGHTS).open("rb") as f:
        os.fsync(f.fileno())
    arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    replace_atomically(folder / OPTIMIZER, lambda f: np.savez(f, **arrays))
    _sync_folder(folder)  # the files' names are on disk before the mark
    write_json(folder / STATE, state)
    _sync_folder(folder)


def _link(out: Path, folder: Path) -> None:
    """Make out/ckpt a link to `folder` (a sibling), replacing the old link atomically.
    A real ckpt/ folder (an earlier version's) is first renamed .ckpt-old, the name those
    versions gave their previous checkpoint: `folder` is newer and complete."""
    final = out / CHECKPOINT
    if final.is_dir() and not final.is_symlink():
        if (out / _LEGACY).exists():
            _remove(out / _LEGACY)
        final.rename(out / _LEGACY)
    link = out / _LINK
    if link.is_symlink() or link.exists():
        _remove(link)  # left by a killed save
    os.symlink(folder.name, link)  # relative: the run's folder can be moved or copied
    os.replace(link, final)
    _sync_folder(out)


def _remove(path: Path) -> None:
    """Remove a file, a link or a checkpoint folder; a folder loses its state.json first,
    so that if this is killed halfway it is incomplete, never taken for a checkpoint."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    (path / STATE).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def _sync_folder(folder: Path) -> None:
    """Sync a folder's entries (the names of its files) to disk, where the system can."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system or a system that cannot sync folders
    finally:
        os.close(fd)


def _last_number(out: Path) -> int:
    """The highest number of a checkpoint folder in `out` (complete or not), or 0."""
    numbers = [int(m[1]) for p in out.iterdir() if (m := _NUMBERED.fullmatch(p.name))]
    return max(numbers, default=0)


def _candidates(out: Path) -> list[Path]:
    """The folders in `out` that may hold a checkpoint, newest first: the numbered ones,
    then a real ckpt/ folder, then the previous one of an earlier version's swap."""
    numbered = sorted(
        ((int(m[1]), p) for p in out.iterdir() if (m := _NUMBERED.fullmatch(p.name))),
        reverse=True,
    )
    return [p for _, p in numbered] + [out / CHECKPOINT, out / _LEGACY]


def _checkpoint_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The newest complete checkpoint in out_dir (or out_dir itself, if it is one); named
    out_dir/ckpt when that is the link to it."""
    out = Path(out_dir)
    if out.name == CHECKPOINT and (out / STATE).exists():
        return out
    if out.is_dir():
        for candidate in _candidates(out):
            if (candidate / STATE).is_file():
                final = out / CHECKPOINT
                return (
                    final
                    if final.is_symlink() and final.resolve() == candidate.resolve()
                    else candidate
                )
    raise FileNotFoundError(f"no Keras checkpoint in {out} (expected {out / CHECKPOINT})")


def load_checkpoint(out_dir: str | os.PathLike[str]) -> tuple[dict, Path]:
    """state.json of the checkpoint in out_dir (and its folder), with clear errors."""
    folder = _checkpoint_dir(out_dir)
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {folder} is corrupt ({STATE}: {err})") from None
    missing = [k for k in ("step", "model_config", "train_config") if k not in state]
    if missing:
        raise ValueError(f"checkpoint {folder} is missing {missing}: not a training checkpoint")
    return state, folder


def _restore(folder: Path, model: GPT, optimizer) -> None:
    try:
        with warnings.catch_warnings():  # the optimizer is restored below, not by Keras
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(folder / WEIGHTS))
        with np.load(folder / OPTIMIZER, allow_pickle=False) as saved:
            arrays = [saved[key] for key in sorted(saved.files)]
    except Exception as err:  # h5py and numpy raise many kinds for a damaged file
        raise ValueError(f"checkpoint {folder} is corrupt: {err}") from None
    optimizer.build(model.trainable_variables)
    if len(arrays) != len(optimizer.variables):
        raise ValueError(
            f"checkpoint {folder} holds {len(arrays)} optimizer variables, this optimizer has "
            f"{len(optimizer.variables)} (was grad_accum changed?)"
        )
    for variable, value in zip(optimizer.variables, arrays, strict=True):
        variable.assign(value)


def load_model(out_dir: str | os.PathLike[str]):
    """The trained Keras GPT in out_dir/ckpt and its tokenizer (or None)."""
    state, folder = load_checkpoint(out_dir)
    model = GPT(GPTConfig.from_dict(state["model_config"]))
    if state.get("lora"):  # a LoRA fine-tuning run: its layers first, then its weights
        from course.tf.lora import apply_lora

        apply_lora(model, **state["lora"])
    _load_weights(model, folder)
    return model, tokenizer_from_state(state.get("tokenizer"))


def _load_weights(model: GPT, folder: Path) -> None:
    try:
        model.load_weights(str(folder / WEIGHTS))
    except Exception as err:
        raise ValueError(f"checkpoint {folder} is corrupt: {err}") from None


# --------------------------------------------------------------------------------------
# The run: fit and one callback
# --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: GPT
    optimizer: Any
    metrics: dict[str, Any]  # what metrics.json holds
    history: list[dict[str, Any]] = field(default_factory=list)  # every logged event


class _Run(keras.callbacks.Callback):
    """Counts steps, logs every log_interval, evaluates and checkpoints every
    eval_interval and at the end, and keeps the step times (evaluation excluded)."""

    def __init__(self, run: dict) -> None:
        super().__init__()
        self.run = run
        self.step = run["start"]
        self.step_times: list[float] = []
        self._logged_at = 0
        self._tick = 0.0

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self._tick = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None) -> None:
        run, t = self.run, self.run["train_cfg"]
        # reading the loss waits for the step to finish: the time includes all of it
        loss = float(logs["loss"]) if logs and "loss" in logs else math.nan
        self.step_times.append(time.perf_counter() - self._tick)
        used = run["trained_s"] / t.time_budget_s if t.time_budget_s > 0 else None  # step's
        run["trained_s"] += self.step_times[-1]
        self.step += 1
        run["bar"].update(self.step_times[-1] if t.time_budget_s > 0 else 1)
        out_of_time = t.time_budget_s > 0 and run["trained_s"] >= t.time_budget_s
        if t.time_budget_s > 0:
            run["progress"].assign(run["trained_s"] / t.time_budget_s)  # the next step's
        if out_of_time and self.model is not None:
            self.model.stop_training = True  # fit ends after this step
        if self.step % t.log_interval == 0:
            ms = 1000 * float(np.mean(self.step_times[self._logged_at :]))
            self._logged_at = len(self.step_times)
            lr = lr_at(self.step - 1, t, used)  # the rate this step used, as the schedule has it
            tokens = t.batch_size * t.grad_accum * run["block_size"]
            run["log"].record(
                {"event": "train", "iter": self.step, "loss": loss, "lr": lr,
                 "ms_per_iter": ms, "tokens_per_sec": tokens / (ms / 1000)}
            )  # fmt: skip
            run["bar"].set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            with run["tensorboard"].as_default(step=self.step):
                tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/lr", lr)
        if self.step % t.eval_interval == 0 or self.step == t.max_iters or out_of_time:
            run["evaluate"](self.step)


def _check_strategy(strategy, train_cfg: TrainConfig, model, run_eagerly: bool) -> tuple[int, int]:
    """(replicas in sync, worker processes) of `strategy` (None: one device), or a clear
    error for what cannot train under it."""
    if strategy is None:
        return 1, 1
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(f"strategy must be a tf.distribute.Strategy or None, got {strategy!r}")
    replicas = strategy.num_replicas_in_sync
    workers = 1
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        tasks = strategy.cluster_resolver.cluster_spec().as_dict()
        workers = max(len(tasks.get("worker", [])) + len(tasks.get("chief", [])), 1)
    if train_cfg.batch_size % replicas:
        raise ValueError(
            f"batch_size {train_cfg.batch_size} must divide by the number of replicas "
            f"{replicas} (each replica trains on an equal slice of the batch): use a multiple "
            f"of {replicas}"
        )
    if train_cfg.grad_accum > 1:
        raise ValueError(
            f"grad_accum {train_cfg.grad_accum} is not available under a strategy (each "
            "replica takes (B, T) batches): use grad_accum 1 and a larger batch_size"
        )
    if model is not None:
        raise ValueError("model= cannot train under a strategy: train builds it in its scope")
    if run_eagerly and workers > 1:
        raise ValueError("run_eagerly is not available under MultiWorkerMirroredStrategy")
    return replicas, workers


def _strategy_name(strategy) -> str | None:
    """The name a learner knows the strategy by (MultiWorkerMirroredStrategy's class is
    CollectiveAllReduceStrategy)."""
    if strategy is None:
        return None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def _is_chief(strategy) -> bool:
    """Whether this process writes the run's files: always, but for the workers other
    than the chief (worker 0) under MultiWorkerMirroredStrategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _fit_on_workers(model: GPT, strategy, batches, batch_size: int, steps: int, counter) -> None:
    """`fit`'s work under MultiWorkerMirroredStrategy, written out: each worker's input
    pipeline takes its rows of every global batch from `batches` (the same stream on every
    worker), `strategy.run` runs `model.train_step` on every replica (it divides by all
    replicas' tokens; the optimizer sums their gradients), and the callback `counter`
    sees each step as `fit` would show it."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        rows = batch_size // context.num_input_pipelines  # one pipeline per worker
        first = context.input_pipeline_id * rows
        mine = batches.map(lambda x, y: (x[first : first + rows], y[first : first + rows]))
        per_replica = context.get_per_replica_batch_size(batch_size)
        return mine.unbatch().batch(per_replica, drop_remainder=True)

    shares = iter(strategy.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def train_step(x, y):
        logs = strategy.run(model.train_step, args=((x, y),))
        return strategy.experimental_local_results(logs["loss"])[0]  # the same on each

    for batch in range(steps):
        counter.on_train_batch_begin(batch)
        x, y = next(shares)
        counter.on_train_batch_end(batch, {"loss": train_step(x, y)})


def _write_csv(path: Path, history: list[dict]) -> None:
    columns = ["event", "iter", "loss", "lr", "ms_per_iter", "tokens_per_sec", "train_loss",
               "val_loss"]  # fmt: skip
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, table.getvalue())


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
    jit_compile: bool = True,
    run_eagerly: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    strategy=None,
) -> TrainResult:
    """Train the Keras GPT with `preset`; the arguments are the PyTorch trainer's, plus
    `jit_compile` (XLA) and `run_eagerly` (no tf.function at all: slow, debuggable).
    `init_from` and the preset's `lora_r` fine-tune as there (`course.tf.lora`): a Keras
    run's weights and tokenizer to start from, and LoRA adapters only, written to
    out_dir/adapter.safetensors (the file format both frameworks read) at every checkpoint.

    `strategy` (a `tf.distribute` MirroredStrategy or MultiWorkerMirroredStrategy, made
    before anything ran in TensorFlow) trains data-parallel on its replicas: the same
    batches and, up to float rounding, the same losses as one process (module docstring).
    Under MultiWorkerMirroredStrategy every worker calls `train`; only the chief writes to
    out_dir and shows progress, and `callback` runs on every worker."""

    mcfg, tcfg = preset.model, preset.train
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs the out_dir that holds the checkpoint")
    replicas, workers = _check_strategy(strategy, tcfg, model, run_eagerly)
    if strategy is not None and (tcfg.time_budget_s > 0 or tcfg.optimizer != "adamw"):
        raise ValueError(
            "time_budget_s and optimizer 'muon' are for one device: under a strategy each "
            "worker would read its own clock, and the replicas' gradients are summed before "
            "clipping only for AdamW. Train under a strategy with max_iters and AdamW"
        )
    chief = _is_chief(strategy)
    writes = out is not None and chief  # out_dir belongs to the chief
    progress = progress and chief
    state, folder = load_checkpoint(out) if resume else (None, None)
    if state is not None and state["model_config"] != mcfg.to_dict():
        raise ValueError(
            f"the checkpoint's model {state['model_config']} differs from the preset's "
            f"{mcfg.to_dict()}: resume with the settings it was trained with"
        )
    if state is not None and tokenizer is None:
        tokenizer = tokenizer_from_state(state.get("tokenizer"))
    lora = run_lora(tcfg)
    if state is not None:
        check_resumed_lora(state, lora)
        check_resumed_optimizer(state, tcfg)
    base_folder = None
    if init_from is not None and state is None:  # on resume, the checkpoint holds them
        base_state, base_folder = load_checkpoint(init_from)
        check_fine_tuning_base(base_state, mcfg, init_from)
        if tokenizer is None:
            tokenizer = tokenizer_from_state(base_state.get("tokenizer"))
    threads = runtime.set_threads(tcfg.threads)
    if data is None:
        *data, tokenizer = corpus_tokens(
            tokenizer=tokenizer,
            kind=tcfg.tokenizer,
            vocab_size=mcfg.vocab_size,
            val_fraction=tcfg.val_fraction,
            progress=progress,
        )
    splits = {
        name: check_tokens(name, tokens, mcfg.vocab_size, mcfg.block_size)
        for name, tokens in zip(("train", "val"), data[:2], strict=True)
    }

    jit_compile = jit_compile and not run_eagerly and strategy is None  # XLA: one device
    runtime.seed_everything(tcfg.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if model is None:
            model = GPT(mcfg)  # its variables mirrored on every replica under a strategy
        elif model.config != mcfg:
            raise ValueError(f"model.config {model.config} differs from the preset's {mcfg}")
        if base_folder is not None:
            _load_weights(model, base_folder)
        if lora is not None:
            from course.tf.lora import apply_lora, save_adapter

            apply_lora(model, **lora, dropout=mcfg.dropout)
        trained_s = float(state.get("trained_seconds") or 0.0) if state is not None else 0.0
        budget_used = None  # the fraction of a time budget used: the schedule reads it
        if tcfg.time_budget_s > 0:
            budget_used = tf.Variable(trained_s / tcfg.time_budget_s, dtype=tf.float64,
                                      trainable=False, name="budget_used")  # fmt: skip
        optimizer = configure_optimizer(model, tcfg, budget_used)
        model.compile(optimizer=optimizer, jit_compile=jit_compile, run_eagerly=run_eagerly)
        start, best_val = 0, math.inf
        if state is not None:
            _restore(folder, model, optimizer)
            start, best_val = state["step"], state.get("best_val_loss") or math.inf
    if writes:
        out.mkdir(parents=True, exist_ok=True)
    log = EventLog(out if writes else None, start if state is not None else None, callback)
    tensorboard = (
        tf.summary.create_file_writer(str(out / "tb"))
        if writes
        else tf.summary.create_noop_writer()
    )
    losses = {"train": math.nan, "val": math.nan}

    def evaluate(step: int) -> None:
        nonlocal losses, best_val
        args = (tcfg.batch_size, mcfg.block_size, tcfg.eval_iters, eval_seed(tcfg.seed, step))
        losses = estimate_loss(model, splits, *args)
        best_val = min(best_val, losses["val"])
        log.record({"event": "eval", "iter": step, "train_loss": losses["train"],
                    "val_loss": losses["val"]})  # fmt: skip
        with tensorboard.as_default(step=step):
            tf.summary.scalar("eval/train_loss", losses["train"])
            tf.summary.scalar("eval/val_loss", losses["val"])
        if writes:
            save_checkpoint(
                out, model, optimizer, step=step, model_config=mcfg.to_dict(),
                train_config=tcfg.to_dict(), preset=preset.name,
                tokenizer=tokenizer_state(tokenizer), best_val_loss=best_val, lora=lora,
                init_from=str(init_from) if init_from is not None else None,
                trained_seconds=run["trained_s"],
            )  # fmt: skip
            if lora is not None:
                save_adapter(model, out / ADAPTER_FILE)

    bar = progress_bar(tcfg, start, trained_s, progress, preset.name)
    run = {"train_cfg": tcfg, "block_size": mcfg.block_size, "log": log, "bar": bar,
           "evaluate": evaluate, "tensorboard": tensorboard, "start": start,
           "trained_s": trained_s, "progress": budget_used}  # fmt: skip
    counter = _Run(run)
    started = time.perf_counter()
    try:
        if start == 0:
            evaluate(0)  # the loss before training: about ln(vocab_size)
        remaining = tcfg.max_iters - start
        if tcfg.time_budget_s > 0 and trained_s >= tcfg.time_budget_s:
            remaining = 0  # resumed with the budget spent
        if remaining > 0:
            # the PyTorch trainer's batch stream, from the first batch not yet used
            batches = make_dataset(splits["train"], tcfg.batch_size, mcfg.block_size,
                                   tcfg.seed, steps=tcfg.max_iters * tcfg.grad_accum)  # fmt: skip
            batches = batches.skip(start * tcfg.grad_accum)
            if tcfg.grad_accum > 1:  # (accum, B, T): one element per optimizer step
                batches = batches.batch(tcfg.grad_accum, drop_remainder=True)
            if workers > 1:  # `fit` fails under MultiWorkerMirroredStrategy here
                _fit_on_workers(model, strategy, batches, tcfg.batch_size, remaining, counter)
            else:  # one device, or MirroredStrategy: `fit` splits each batch over replicas
                model.fit(batches, epochs=1, steps_per_epoch=remaining, callbacks=[counter],
                          verbose=0, shuffle=False)  # fmt: skip
        elif start > 0:
            evaluate(start)  # resumed at or past the end: report once more
    finally:
        bar.close()
        log.close()
        tensorboard.close()
    full_val = full_split_loss(model, splits["val"], mcfg.block_size) if tcfg.full_val else None

    timed = counter.step_times[1:] or counter.step_times  # the first step traces/compiles
    ms_per_iter = 1000 * float(np.mean(timed)) if timed else math.nan
    tokens_per_step = tcfg.batch_size * tcfg.grad_accum * mcfg.block_size
    metrics = run_summary({
        "framework": "tf",
        "preset": preset.name,
        "iters": counter.step,
        "resumed_from": start if state is not None else None,
        "train_loss": losses["train"],
        "val_loss": losses["val"],
        "best_val_loss": best_val,
        "full_val_loss": full_val,
        "train_seconds": run["trained_s"],
        "tokens_per_sec": tokens_per_step / (ms_per_iter / 1000),
        "ms_per_iter": ms_per_iter,
        "first_iter_seconds": counter.step_times[0] if counter.step_times else math.nan,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - started,
        "n_params": model.num_params(),
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "lora": lora,
        "init_from": str(init_from) if init_from is not None else None,
        "threads": threads,
        "jit_compile": bool(jit_compile),
        "run_eagerly": run_eagerly,
        "strategy": _strategy_name(strategy),
        "world_size": replicas,  # replicas in sync, as the PyTorch trainer counts ranks
        "workers": workers,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "device": "gpu" if tf.config.list_logical_devices("GPU") else "cpu",
        "model_config": mcfg.to_dict(),
        "train_config": tcfg.to_dict(),
    })  # fmt: skip
    if writes:
        write_json(out / METRICS, metrics)
        _write_csv(out / METRICS_CSV, log.history)
    if workers > 1:  # the chief serves the cluster: no worker leaves before all are done
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.ones, args=((),)), None)
    return TrainResult(model=model, optimizer=optimizer, metrics=metrics, history=log.history)

"""What a training run needs besides a framework: its data, its files and its log.

Framework-neutral, shared by `course.torch.train` and `course.tf.train`, so that both
trainers read the same tokens, draw the same evaluation batches, write the same
metrics.jsonl / metrics.json fields and write every file atomically.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from course.config import TrainConfig
from course.data import as_token_array, check_int, load_text, train_val_split
from course.tokenizers import BPETokenizer, CharTokenizer

METRICS = "metrics.json"  # the run's summary, written at the end
METRICS_LOG = "metrics.jsonl"  # one JSON line per logged event, appended as it happens

# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def replace_atomically(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Call write(file) on a temporary file beside `path`, sync it, rename it to `path`.

    Readers see the old file or the new one, never half of one: a run killed while saving
    leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = tempfile.NamedTemporaryFile(
        delete=False, dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with part:
            write(part)
            part.flush()
            os.fsync(part.fileno())
        os.replace(part.name, path)
    finally:
        Path(part.name).unlink(missing_ok=True)  # only left if something failed


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN or Infinity: a value that was never measured is null.
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(path: str | os.PathLike[str], document: dict) -> None:
    """`document` as indented JSON at `path`, atomically (NaN/inf become null)."""
    document = {key: _finite_or_none(value) for key, value in document.items()}
    text = json.dumps(document, indent=1) + "\n"
    replace_atomically(path, lambda f: f.write(text.encode("utf-8")))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------------------
# Data and tokenizers
# --------------------------------------------------------------------------------------


def shakespeare_splits(train_cfg: TrainConfig, vocab_size: int, tokenizer=None, progress=True):
    """Tiny Shakespeare encoded with `tokenizer` (built here if None): train, val, tokenizer."""
    text = load_text("tinyshakespeare", progress=progress)
    if tokenizer is None and train_cfg.tokenizer == "char":
        tokenizer = CharTokenizer.from_text(text)
    elif tokenizer is None:  # pure-Python BPE: ~5 s for 512 tokens; 50k would take long
        print(f"training a {vocab_size}-token BPE on Tiny Shakespeare...", file=sys.stderr)
        tokenizer = BPETokenizer.train(text, vocab_size)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    ids = ids.astype(np.uint16) if ids.max() < 2**16 else ids  # 4x less memory
    train_tokens, val_tokens = train_val_split(ids, train_cfg.val_fraction)
    return train_tokens, val_tokens, tokenizer


def check_tokens(name: str, data: Any, vocab_size: int, block_size: int) -> np.ndarray:
    """`data` as a 1-D token array, or a clear error if it does not fit the model."""
    data = as_token_array(data)
    if len(data) <= block_size:
        raise ValueError(
            f"{name} data has {len(data)} tokens; it needs more than block_size ({block_size})"
        )
    low, high = int(data.min()), int(data.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"{name} data holds token id {low if low < 0 else high}, outside the model's "
            f"vocabulary 0..{vocab_size - 1}; set vocab_size to at least {high + 1}"
        )
    return data


def eval_seed(seed: int, step: int) -> int:
    """The seed of the evaluation batches at `step`: fixed per (run seed, step), and never
    drawn from the training batch generator, so evaluating does not move that stream."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def tokenizer_state(tokenizer) -> dict | None:
    """A tokenizer as plain data (lists, strings) that a checkpoint can hold safely."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "chars": list(tokenizer.chars)}
    if isinstance(tokenizer, BPETokenizer):
        merges = [list(pair) for pair in tokenizer.merges]  # in rank order
        return {"kind": "bpe", "merges": merges, "special_tokens": tokenizer.special_tokens,
                "pattern": tokenizer.pattern}  # fmt: skip
    raise TypeError(f"tokenizer must be a CharTokenizer or a BPETokenizer, got {tokenizer!r}")


def tokenizer_from_state(state: dict | None):
    """The tokenizer `tokenizer_state` described (None stays None)."""
    if state is None:
        return None
    if state["kind"] == "char":
        return CharTokenizer(state["chars"])
    merges = [tuple(pair) for pair in state["merges"]]
    return BPETokenizer(merges, state["special_tokens"], state["pattern"])


def check_sampling_args(max_new_tokens, temperature, top_k, top_p) -> None:
    """Clear errors for `generate`'s arguments, the same in both frameworks."""
    check_int("max_new_tokens", max_new_tokens, 0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


# --------------------------------------------------------------------------------------
# The event log
# --------------------------------------------------------------------------------------


class EventLog:
    """Events go to `history`, to out_dir/metrics.jsonl (one JSON line each, flushed, so a
    live plot or `tail -f` sees them at once) and to `callback(event)`.

    Resuming at step k keeps the lines up to k and drops any written after the checkpoint,
    so the file tells one run's story without repeats.
    """

    def __init__(self, out: Path | None, resumed_at: int | None, callback=None) -> None:
        self.history: list[dict] = []
        self.callback, self.file = callback, None
        if out is not None:
            path, kept = Path(out) / METRICS_LOG, []
            if resumed_at is not None and path.is_file():
                lines = path.read_text(encoding="utf-8").splitlines()
                kept = [line for line in lines if line and json.loads(line)["iter"] <= resumed_at]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            self.file = path.open("a", encoding="utf-8")

    def record(self, event: dict) -> None:
        self.history.append(event)
        if self.file is not None:
            self.file.write(json.dumps(event) + "\n")
            self.file.flush()
        if self.callback is not None:
            self.callback(event)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

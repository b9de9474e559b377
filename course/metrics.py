"""What a training run records: its event log, its summary, its memory, and the names of
the files it writes in its out_dir (the checkpoint names are here too, so the CLI finds
either framework's checkpoint without importing a framework).

Both trainers (`course.torch.train`, `course.tf.train`) log the same events to the same
files, so a plot or a comparison reads either framework's run the same way:

- `METRICS_LOG` (metrics.jsonl): one JSON line per event, appended as it happens
  (`EventLog`); a resumed run keeps the lines up to its checkpoint and drops, with a
  warning, any line that is not a whole event (the last one, torn by a killed run);
- `METRICS` (metrics.json): the run's summary, written at the end with
  `course.files.write_json`;
- `read_events(out_dir)`: the logged events back, to plot or compare runs;
- `peak_rss_mb()`: the process's peak memory, one of the summary's figures;
- `median_ms(fn, repeats)`: how long a call takes, the one timer of the comparison
  (`course.compare`) and the benchmarks.

Framework-neutral and cheap to import (standard library only).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from course.files import write_text

__all__ = [
    "METRICS",
    "METRICS_LOG",
    "TORCH_CHECKPOINT",
    "KERAS_CHECKPOINT",
    "EventLog",
    "median_ms",
    "peak_rss_mb",
    "progress_bar",
    "read_events",
    "run_summary",
    "SUMMARY_KEYS",
]

METRICS = "metrics.json"  # the run's summary, written at the end
METRICS_LOG = "metrics.jsonl"  # one JSON line per logged event, appended as it happens
TORCH_CHECKPOINT = "ckpt.pt"  # course.torch.train's checkpoint: one file
KERAS_CHECKPOINT = "ckpt"  # course.tf.train's checkpoint: a link to its newest folder


# The keys of a run's summary (metrics.json), the same for both trainers; a key that does
# not apply to a framework (keras_version for a PyTorch run) is None there.
SUMMARY_KEYS = (
    "framework", "preset", "iters", "resumed_from", "train_loss", "val_loss",
    "best_val_loss", "full_val_loss", "train_seconds", "tokens_per_sec", "ms_per_iter",
    "first_iter_seconds", "peak_rss_mb", "seconds", "n_params", "trainable_params", "lora",
    "init_from", "threads", "world_size", "workers", "strategy", "device", "jit_compile",
    "run_eagerly", "torch_version", "tensorflow_version", "keras_version", "model_config",
    "train_config",
)  # fmt: skip


def run_summary(values: dict) -> dict:
    """`values` as a run summary: every SUMMARY_KEYS key, in that order, None where a
    trainer gave none. A key outside SUMMARY_KEYS is a ValueError (add it there, for both)."""
    unknown = sorted(set(values) - set(SUMMARY_KEYS))
    if unknown:
        raise ValueError(f"summary keys {unknown} are not in course.metrics.SUMMARY_KEYS")
    return {key: values.get(key) for key in SUMMARY_KEYS}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """The median wall time of a call of `fn()`, in ms, over `repeats` calls after one
    warm-up call (not counted: it pays for first-call work such as allocation)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def progress_bar(train_cfg, step: int, trained_seconds: float, enabled: bool, desc: str):
    """The trainers' tqdm bar: in steps (to max_iters), or, with a time budget, in seconds
    of training (to time_budget_s; update it by each step's seconds)."""
    from tqdm.auto import tqdm

    budget = train_cfg.time_budget_s
    if budget > 0:

        class BudgetBar(tqdm):  # the last step ends past the budget: the bar stops full
            def update(self, n: float = 1) -> bool | None:
                return super().update(min(n, max(self.total - self.n, 0)))

        # unit_scale: seconds shown as 12.3, not 12.30527
        return BudgetBar(total=budget, initial=min(trained_seconds, budget), disable=not enabled,
                    desc=desc, unit="s", unit_scale=True,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}"
                    "{postfix}]")  # fmt: skip
    return tqdm(total=train_cfg.max_iters, initial=step, disable=not enabled, desc=desc)


class EventLog:
    """Events go to `history`, to out_dir/metrics.jsonl (one JSON line each, flushed, so a
    live plot or `tail -f` sees them at once) and to `callback(event)`.

    Resuming at step k keeps the lines up to k and drops any written after the checkpoint,
    so the file tells one run's story without repeats. A line that is not a whole event
    (a JSON object with an "iter"), such as the last line of a run killed while writing
    it, is dropped too, with a RuntimeWarning naming the file and the line numbers.
    """

    def __init__(
        self,
        out: Path | None,
        resumed_at: int | None,
        callback: Callable[[dict], None] | None = None,
    ) -> None:
        self.history: list[dict] = []
        self.callback, self.file = callback, None
        if out is not None:
            path, kept = Path(out) / METRICS_LOG, []
            if resumed_at is not None and path.is_file():
                kept = [line for line, event in _read_events(path) if event["iter"] <= resumed_at]
            write_text(path, "".join(line + "\n" for line in kept))  # old log or new, never half
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


def read_events(out_dir: str | Path) -> list[dict]:
    """The events a run logged to out_dir/metrics.jsonl, in order (what `EventLog.history`
    held), from either framework's trainer; lines that are not whole events are dropped
    with a warning. FileNotFoundError names the file if the run logged nothing."""
    path = Path(out_dir) / METRICS_LOG
    if not path.is_file():
        raise FileNotFoundError(f"no event log {path}: is {out_dir} a training run's --out?")
    return [event for _, event in _read_events(path)]


def _read_events(path: Path) -> list[tuple[str, dict]]:
    """(line, event) for each whole event in the log at `path`; warns once, naming the
    file and the line numbers, if it drops lines that are not (torn or corrupt)."""
    events, dropped = [], []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            event = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            event = None
        if isinstance(event, dict) and isinstance(event.get("iter"), int):
            events.append((line, event))
        else:
            dropped.append(number)
    if dropped:
        several = "s" if len(dropped) > 1 else ""
        warnings.warn(
            f"{path}: dropped line{several} {', '.join(map(str, dropped))}, not a whole event "
            "(torn by a run killed while writing, or corrupt); kept the other lines",
            RuntimeWarning,
            stacklevel=3,
        )
    return events

"""What a training run records: its event log, its summary, its memory, and the names of
the files it writes in its out_dir (the checkpoint names are here too, so the CLI finds
either framework's checkpoint without importing a framework).

Both trainers (`course.torch.train`, `course.tf.train`) log the same events to the same
files, so a plot or a comparison reads either framework's run the same way:

- `METRICS_LOG` (metrics.jsonl): one JSON line per event, appended as it happens
  (`EventLog`);
- `METRICS` (metrics.json): the run's summary, written at the end with
  `course.files.write_json`;
- `peak_rss_mb()`: the process's peak memory, one of the summary's figures.

Framework-neutral and cheap to import (standard library only).
"""

from __future__ import annotations

import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path

from course.files import write_text

__all__ = [
    "METRICS",
    "METRICS_LOG",
    "TORCH_CHECKPOINT",
    "KERAS_CHECKPOINT",
    "EventLog",
    "peak_rss_mb",
]

METRICS = "metrics.json"  # the run's summary, written at the end
METRICS_LOG = "metrics.jsonl"  # one JSON line per logged event, appended as it happens
TORCH_CHECKPOINT = "ckpt.pt"  # course.torch.train's checkpoint: one file
KERAS_CHECKPOINT = "ckpt"  # course.tf.train's checkpoint: a folder, swapped in whole


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class EventLog:
    """Events go to `history`, to out_dir/metrics.jsonl (one JSON line each, flushed, so a
    live plot or `tail -f` sees them at once) and to `callback(event)`.

    Resuming at step k keeps the lines up to k and drops any written after the checkpoint,
    so the file tells one run's story without repeats.
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
                lines = path.read_text(encoding="utf-8").splitlines()
                kept = [line for line in lines if line and json.loads(line)["iter"] <= resumed_at]
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

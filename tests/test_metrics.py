"""course.metrics: the event log both trainers write, and the memory figure of a run.
Also: the framework-neutral homes of what runs share import no framework."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest
from conftest import REPO

from course.metrics import METRICS_LOG, EventLog, peak_rss_mb


def lines(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / METRICS_LOG).read_text().splitlines()]


def test_events_go_to_history_file_and_callback(tmp_path):
    seen = []
    log = EventLog(tmp_path, resumed_at=None, callback=seen.append)
    events = [{"event": "eval", "iter": 0, "val_loss": 4.2}, {"event": "train", "iter": 1}]
    for event in events:
        log.record(event)
        assert lines(tmp_path)[-1] == event  # flushed at once: a live plot sees it
    log.close()
    assert log.history == seen == lines(tmp_path) == events


def test_without_a_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = EventLog(None, resumed_at=None)
    log.record({"event": "train", "iter": 1})
    log.close()
    assert log.history == [{"event": "train", "iter": 1}]
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_starts_a_new_log(tmp_path):
    (tmp_path / METRICS_LOG).write_text(json.dumps({"event": "train", "iter": 7}) + "\n")
    EventLog(tmp_path, resumed_at=None).close()
    assert (tmp_path / METRICS_LOG).read_text() == ""


def test_resuming_keeps_the_lines_up_to_the_checkpoint(tmp_path):
    old = [{"event": "train", "iter": i} for i in (10, 20, 30)] + [{"event": "eval", "iter": 20}]
    (tmp_path / METRICS_LOG).write_text("".join(json.dumps(e) + "\n" for e in old))
    log = EventLog(tmp_path, resumed_at=20)
    log.record({"event": "train", "iter": 30, "loss": 1.0})
    log.close()
    assert lines(tmp_path) == [old[0], old[1], old[3], {"event": "train", "iter": 30, "loss": 1.0}]
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_LOG]  # no temporary file left


def test_peak_rss_is_at_least_what_the_process_holds_now():
    ballast = bytearray(64 * 2**20)  # 64 MiB, touched
    ballast[::4096] = b"x" * len(ballast[::4096])
    now = psutil.Process().memory_info().rss / 2**20
    peak = peak_rss_mb()
    assert now - 1 <= peak < psutil.virtual_memory().total / 2**20
    assert peak >= 64
    del ballast


@pytest.mark.parametrize("module", ["course.files", "course.metrics", "course.sampling"])
def test_shared_homes_import_no_framework(module):
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow',"
        " 'keras', 'jax')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

"""course.metrics: the event log both trainers write, and the memory figure of a run.
Also: the framework-neutral homes of what runs share import no framework."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest
from conftest import REPO

from course.metrics import METRICS_LOG, EventLog, peak_rss_mb, read_events


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


def _torn_log(folder, tail: str) -> list[dict]:
    """A metrics.jsonl of three events followed by `tail`; returns the three events."""
    events = [{"event": "train", "iter": i, "loss": 2.0 - i / 10} for i in (1, 2, 3)]
    text = "".join(json.dumps(e) + "\n" for e in events) + tail
    (folder / METRICS_LOG).write_text(text)
    return events


@pytest.mark.parametrize("resumed_at", [3, 99])
def test_resuming_drops_a_line_torn_by_a_kill_and_says_so(tmp_path, resumed_at):
    events = _torn_log(tmp_path, '{"event": "train", "iter": 4, "lo')  # killed mid-write
    with pytest.warns(RuntimeWarning, match=rf"{METRICS_LOG}.* line 4\b"):
        log = EventLog(tmp_path, resumed_at=resumed_at)
    log.record({"event": "train", "iter": 4, "loss": 1.5})
    log.close()
    assert lines(tmp_path) == [*events, {"event": "train", "iter": 4, "loss": 1.5}]


def test_resuming_drops_a_corrupt_line_in_the_middle_and_keeps_the_rest(tmp_path):
    events = _torn_log(tmp_path, "")
    text = (tmp_path / METRICS_LOG).read_bytes().splitlines(keepends=True)
    garbage = [b'{"event": "tra\xff\n', b"[1, 2]\n", b'{"event": "eval"}\n']  # no "iter"
    (tmp_path / METRICS_LOG).write_bytes(b"".join([text[0], *garbage, *text[1:]]))
    with pytest.warns(RuntimeWarning, match=r"lines 2, 3, 4\b") as caught:
        EventLog(tmp_path, resumed_at=3).close()
    assert len(caught) == 1 and str(tmp_path / METRICS_LOG) in str(caught[0].message)
    assert lines(tmp_path) == events


def test_a_log_without_damage_resumes_without_a_warning(tmp_path, recwarn):
    events = _torn_log(tmp_path, "\n")  # an empty line is no damage
    EventLog(tmp_path, resumed_at=2).close()
    assert lines(tmp_path) == events[:2] and not recwarn.list


def test_read_events_gives_back_what_the_run_logged(tmp_path):
    log = EventLog(tmp_path, resumed_at=None)
    events = [{"event": "eval", "iter": 0, "val_loss": 4.2}, {"event": "train", "iter": 1}]
    for event in events:
        log.record(event)
    log.close()
    assert read_events(tmp_path) == log.history == events


def test_read_events_skips_a_torn_line_with_a_warning(tmp_path):
    events = _torn_log(tmp_path, '{"event": "train", "iter": 4, "lo')
    with pytest.warns(RuntimeWarning, match=r"line 4\b"):
        assert read_events(tmp_path) == events


def test_read_events_of_a_folder_without_a_log_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=METRICS_LOG):
        read_events(tmp_path)


def test_a_time_budget_bar_survives_a_last_step_past_the_budget(capsys):
    """The bar stops full (tqdm drops the total once n passes it, and a bar format that
    formatted the total as a number then failed at close(): the Keras trainer's first,
    compiling, step can outlast a short budget)."""
    from course.config import TrainConfig
    from course.metrics import progress_bar

    bar = progress_bar(TrainConfig(time_budget_s=2.0), 0, 0.0, True, "run")
    bar.update(1.25)
    bar.set_postfix(loss="1.0")
    bar.update(2.5)  # 3.75 s of a 2 s budget
    bar.close()
    shown = capsys.readouterr().err
    assert "1.25/2.00 s" in shown and "2.00/2.00 s" in shown and "3.75" not in shown
    steps = progress_bar(TrainConfig(max_iters=10), 0, 0.0, True, "run")
    steps.update(4)
    steps.close()
    assert "4/10" in capsys.readouterr().err


def test_median_ms_is_the_median_of_the_timed_calls_without_the_warm_up(monkeypatch):
    import time

    from course.metrics import median_ms

    # A clock that a call of `work` moves on by the next of these seconds: the warm-up
    # call takes 9 s (left out), the timed ones 0.005, 0.001 and 0.003 s.
    durations = iter([9.0, 0.005, 0.001, 0.003])
    clock = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    calls = []

    def work():
        calls.append(1)
        clock[0] += next(durations)

    assert median_ms(work, 3) == pytest.approx(3.0)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="repeats"):
        median_ms(work, 0)

"""Grading a whole class of chapter 00: honest, wrong, broken and hostile submissions.

The class comes from `grading_class.make_class`: every submission has the one row it must
get, no student cell may read or write instructor files nor reach the network, and grading
the same folder again changes nothing. A run stopped half-way finishes on the next one.
"""

from __future__ import annotations

import csv
import hashlib
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import REPO, live_script
from grading_class import FULL_CLASS, ConnectionCounter, make_class

from autograde.grade import grade
from autograde.submission import SCORED

ASSIGNMENT = "00_setup"
COLUMNS = ["student_id", "assignment", "score", "max_score", "status"]  # first, in order
MAX_SCORE = 6.0
LEAKED = "LEAKED"  # what a probing cell prints when an attempt succeeds


def _grade(subs: Path, out: Path, log=lambda msg: None):
    return grade(
        subs,
        out,
        workers=2,
        cell_timeout=10,
        timeout=120,
        solutions=REPO / "solutions",
        log=log,
    )


def _class(dest: Path, out: Path, port: int, size: int = FULL_CLASS):
    return make_class(
        dest,
        assignment=ASSIGNMENT,
        solutions=REPO / "solutions",
        release=REPO / "notebooks",
        gradebook=out / "gradebook.db",
        port=port,
        size=size,
    )


def _csv_rows(out: Path) -> list[dict[str, str]]:
    path = out / "grades.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        names = reader.fieldnames or []
        assert names[:5] == COLUMNS and "notes" in names, names
        return list(reader)


def _mismatches(rows: list[dict[str, str]], expected: dict[str, tuple[float, str]]) -> list[str]:
    """Every row that is not the one expected, each as one line."""
    wrong = []
    for row in rows:
        want = expected.get(row["student_id"])
        got = (float(row["score"]), row["status"])
        if row["assignment"] != ASSIGNMENT or want is None:
            wrong.append(f"{row['student_id']}/{row['assignment']}: unexpected row")
        elif got != want or float(row["max_score"]) != MAX_SCORE:
            wrong.append(
                f"{row['student_id']}: got {got} of {row['max_score']}, expected {want}"
                f" (notes: {row['notes'][:300]})"
            )
    return wrong


def _one_per_student(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    counts = Counter(row["student_id"] for row in rows)
    twice = sorted(student for student, n in counts.items() if n > 1)
    assert not twice, f"students with more than one row: {twice}"
    return {row["student_id"]: row for row in rows}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _gradebook_scores(out: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out}/gradebook.db") as gb:
        return {
            sub.student.id: float(sub.score) for sub in gb.find_assignment(ASSIGNMENT).submissions
        }


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_class_of_forty_gets_the_right_rows_and_nothing_leaks(tmp_path, monkeypatch):
    subs, out = tmp_path / "submissions", tmp_path / "out"
    runs = tmp_path / "runs"  # the course folders, so this run's kernels name them
    runs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(runs))
    instructor_files = _digest(REPO / "solutions" / ASSIGNMENT)
    messages: list[str] = []
    with ConnectionCounter() as counter:
        expected = _class(subs, out, counter.port)
        assert len(expected) == FULL_CLASS
        rows = _grade(subs, out, log=messages.append)
        csv_bytes = (out / "grades.csv").read_bytes()
        book = _gradebook_scores(out)
        again = _grade(subs, out)
        book_again = _gradebook_scores(out)
        time.sleep(0.5)  # a connection still being accepted is counted too
        connections = counter.count

    on_disk = _csv_rows(out)
    by_student = _one_per_student(on_disk)
    assert len(on_disk) == FULL_CLASS and set(by_student) == set(expected), sorted(by_student)
    wrong = _mismatches(on_disk, expected)
    assert not wrong, f"{len(wrong)} rows wrong:\n" + "\n".join(wrong)
    returned = Counter((r.student_id, r.assignment, float(r.score), r.status) for r in rows)
    assert returned == Counter(
        (r["student_id"], r["assignment"], float(r["score"]), r["status"]) for r in on_disk
    ), "grade() returned other rows than it wrote"

    # No student process reached the network, the instructor's files or the gradebook.
    assert connections == 0, f"{connections} connections to 127.0.0.1:{counter.port}"
    leaks = [  # feedback pages, logs and anything else grading wrote
        str(p.relative_to(out))
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and p.suffix not in (".db", ".png")
        and LEAKED in p.read_text(errors="replace")
    ]
    assert not leaks, f"a student cell read or wrote instructor files; see {leaks}"
    # What the snoop and the vandal printed (their cells run after hidden tests, so the
    # feedback pages show a note instead: the graded notebooks hold it).
    snoop = "\n".join(p.read_text() for p in (out / "autograded" / "s14_snoop").rglob("*.ipynb"))
    for path in (
        f"../../../source/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
        f"{REPO}/solutions/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
        f"{out}/gradebook.db",
    ):
        assert f"refused {path}" in snoop, f"the snoop's feedback has no 'refused {path}'"
    vandal = "\n".join(p.read_text() for p in (out / "autograded" / "s15_vandal").rglob("*.ipynb"))
    assert f"refused DELETE FROM grade in {out}/gradebook.db" in vandal
    assert _digest(REPO / "solutions" / ASSIGNMENT) == instructor_files
    # The student's HTML reached the feedback page as text, never as a live script.
    xss = next(s for s in expected if s.endswith("_xss"))
    page = "\n".join(p.read_text() for p in (out / "feedback" / xss).rglob("*.html"))
    assert "bold" in page and "Hello" in page, "the student's harmless HTML is gone"
    assert live_script(page) == [], f"student script is live on {xss}'s feedback page"
    # Each graded row has its feedback page, made while the class was graded; no other row.
    paged = {p.parents[1].name for p in (out / "feedback").glob(f"*/{ASSIGNMENT}/*.html")}
    assert paged == {s for s, (_, status) in expected.items() if status in SCORED}
    assert (out / "logs" / f"feedback__{ASSIGNMENT}.log").is_file()
    # Nothing a kernel of this run started is left running (the fork loop's chain
    # included): a kernel's forks carry its command line, which names this run's folders.
    left = [
        p.info
        for p in psutil.process_iter(["pid", "status", "cmdline"])
        if str(runs) in " ".join(p.info["cmdline"] or [])
        and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert left == [], f"processes of this run still run: {left}"
    graded_ok = {s: score for s, (score, status) in expected.items() if status == "ok"}
    assert {s: book.get(s) for s in graded_ok} == graded_ok, "gradebook and grades.csv disagree"
    assert all(book[s] == MAX_SCORE for s in graded_ok if s.endswith("_correct"))

    # Grading the same folder again adds nothing.
    assert (out / "grades.csv").read_bytes() == csv_bytes, "a second run changed grades.csv"
    assert len(_csv_rows(out)) == FULL_CLASS
    assert book_again == book, "a second run changed the gradebook"
    assert (
        not again
        or Counter((r.student_id, r.assignment, float(r.score), r.status) for r in again)
        == returned
    ), "a second run returned new rows"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_run_stopped_half_way_finishes_on_the_next_without_duplicates(tmp_path):
    subs, out = tmp_path / "submissions", tmp_path / "out"
    expected = _class(subs, out, port=9, size=6)  # the first six kinds open no socket
    command = [sys.executable, "-m", "autograde", "grade", str(subs), "--out", str(out)]
    command += ["--workers", "2", "--cell-timeout", "10", "--timeout", "120"]
    # Ctrl-C (SIGINT to the grading process) once three rows are in grades.csv.
    proc = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As from a terminal: a suite started in the background inherits SIGINT ignored,
        # and Python then never turns Ctrl-C into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    family: list[psutil.Process] = []
    deadline = time.monotonic() + 600
    try:
        while len(_csv_rows(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            family = psutil.Process(proc.pid).children(recursive=True) or family
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before three rows were written"
        proc.send_signal(signal.SIGINT)
        printed, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in printed, printed[-2000:]
    assert "Traceback" not in printed, printed[-2000:]
    left = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"after Ctrl-C, processes of the run are still there: {left}"
    partial = _one_per_student(_csv_rows(out))
    assert 3 <= len(partial) < len(expected), sorted(partial)
    wrong = _mismatches(list(partial.values()), expected)
    assert not wrong, "rows written before the interrupt:\n" + "\n".join(wrong)

    _grade(subs, out)
    rows = _csv_rows(out)
    by_student = _one_per_student(rows)
    assert set(by_student) == set(expected) and len(rows) == len(expected), sorted(by_student)
    wrong = _mismatches(rows, expected)
    assert not wrong, "rows after resuming:\n" + "\n".join(wrong)
    for student, row in partial.items():
        assert by_student[student] == row, f"{student}: regraded after the interrupt"

"""The gradebook as a grading run uses it: nbgrader's database of assignments, students,
submissions and scores, with the roster and due dates that go into it.

The gradebook is ``OUT/gradebook.db`` (SQLite, readable by its owner only) unless the
instructor names a database URL (``postgresql://user@host/name``; on a command line never
with its password, see `gradebook_url`). Scores come from it, never from nbgrader's exit
code (``autograde`` exits 1 whenever any cell fails).
"""

from __future__ import annotations

import contextlib
import csv
from datetime import datetime
from pathlib import Path

from .grades import STUDENT_ID

SQLITE = "sqlite:///"


DB_VARIABLE = "AUTOGRADE_DB"  # the whole gradebook URL, password included, if wanted


def gradebook_url(given: str | None, environ=None) -> str | None:
    """The gradebook URL of a command line: `given` (``--db``), which must hold no password
    (every process on the machine can read a command line: libpq takes the password from
    ~/.pgpass or PGPASSFILE), else $AUTOGRADE_DB, else None (SQLite in OUT)."""
    import os

    environ = os.environ if environ is None else environ
    if given is None:
        return environ.get(DB_VARIABLE) or None
    from sqlalchemy.engine import make_url

    try:
        password = make_url(given).password
    except Exception as err:  # sqlalchemy's ArgumentError and friends
        raise ValueError(f"--db {given!r} is not a database URL ({err})") from None
    if password:
        raise ValueError(
            "--db holds a password, which every process on this machine could read on the "
            f"command line: put it in ~/.pgpass (or PGPASSFILE), or the whole URL in "
            f"${DB_VARIABLE}"
        )
    return given


BUSY_SECONDS = 60  # how long a SQLite writer waits for another one before "locked"


def default_url(out: Path) -> str:
    """The SQLite gradebook in the grading output folder; a writer waits up to
    BUSY_SECONDS for another one (several workers and their nbgrader processes write)."""
    return f"{SQLITE}{(Path(out) / 'gradebook.db').resolve()}?timeout={BUSY_SECONDS}"


def make_private(url: str) -> None:
    """A SQLite gradebook readable by its owner only (it holds the hidden tests), in WAL
    mode: readers never wait for the writer, and writers queue instead of failing."""
    if not url.startswith(SQLITE):
        return
    import sqlite3

    path = Path(url.removeprefix(SQLITE).split("?")[0])
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(path, timeout=BUSY_SECONDS)) as db,
    ):
        db.execute("PRAGMA journal_mode=WAL")  # kept in the file from now on


class Gradebook:
    """The few gradebook reads and writes grading needs (each opens its own connection,
    so that workers in several threads may share one)."""

    def __init__(self, url: str):
        self.url = url

    def _open(self):
        from nbgrader.api import Gradebook as NbgraderGradebook

        from .startup import use_alembic_head_in_process

        use_alembic_head_in_process()

        return NbgraderGradebook(self.url)

    def max_score(self, assignment: str) -> float:
        with self._open() as gb:
            return float(gb.find_assignment(assignment).max_score)

    def result(self, assignment: str, student: str) -> tuple[float, str, float] | None:
        """(score, submitted_at, seconds late) of a graded submission, or None."""
        from nbgrader.api import MissingEntry

        with self._open() as gb:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                return None
            stamp = sub.timestamp.isoformat(sep=" ") if sub.timestamp else ""
            return float(sub.score), stamp, float(sub.total_seconds_late or 0.0)

    def set_due(self, assignment: str, due: datetime) -> None:
        with self._open() as gb:
            gb.update_or_create_assignment(assignment, duedate=due)

    def cell_scores(self, assignment: str, student: str, notebook: str) -> dict[str, float]:
        """{graded cell's grade_id: the points it earned} of one graded notebook."""
        with self._open() as gb:
            sub = gb.find_submission_notebook(notebook, assignment, student)
            return {grade.name: float(grade.score) for grade in sub.grades}

    def remove_student(self, student: str) -> None:
        """Remove a student and their submissions, if there."""
        from nbgrader.api import MissingEntry

        with self._open() as gb, contextlib.suppress(MissingEntry):
            gb.remove_student(student)

    def add_students(self, students: list[dict]) -> None:
        with self._open() as gb:
            for student in students:
                student = dict(student)
                gb.update_or_create_student(student.pop("id"), **student)


def parse_due(text: str) -> datetime:
    """A due date as the command line takes it ("2026-12-01 17:00", UTC unless it names a
    zone); ValueError naming the expected form."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise ValueError(f"due date {text!r}: use YYYY-MM-DD HH:MM[:SS][+HH:MM]") from err


def read_roster(path: Path) -> list[dict]:
    """Students from a CSV with an ``id`` column (and optionally first_name, last_name,
    email), as nbgrader's ``db student import`` reads it; clear errors on bad rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"roster not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise ValueError(f"{path}: a roster needs an 'id' column (found {reader.fieldnames})")
        students, seen = [], set()
        for line, record in enumerate(reader, start=2):
            sid = (record.get("id") or "").strip()
            if not STUDENT_ID.match(sid):
                raise ValueError(f"{path}, line {line}: {sid!r} is not a usable student id")
            if sid in seen:
                raise ValueError(f"{path}, line {line}: student {sid!r} is listed twice")
            seen.add(sid)
            student = {"id": sid}
            for key in ("first_name", "last_name", "email"):
                if (record.get(key) or "").strip():
                    student[key] = record[key].strip()
            students.append(student)
    return students

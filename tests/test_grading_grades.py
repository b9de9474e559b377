"""grades.csv (autograde/grades.py): what is written is read back, in order, and a write
that fails leaves the previous file whole and nothing beside it."""

from __future__ import annotations

import csv
import errno
import os

import pytest

from autograde.grades import FIELDS, Row, read_grades, write_grades

ROWS = [
    Row("zoe", "01_tensors", 0.0, 6.0, "timeout", notes="the notebook ran past 900 s"),
    Row("ada", "01_tensors", 5.5, 6.0, "ok", "2026-12-01 18:30:00", 5400.0),
    Row("ada", "00_setup", 0.0, 4.0, "invalid-notebook", notes='line 1, "quoted",\nnext — é'),
]


def test_rows_are_read_back_as_written_sorted_by_student_and_assignment(tmp_path):
    path = tmp_path / "grades.csv"
    write_grades(ROWS, path)
    with path.open(newline="", encoding="utf-8") as fh:
        records = list(csv.reader(fh))
    assert tuple(records[0]) == FIELDS
    assert [tuple(r[:2]) for r in records[1:]] == [
        ("ada", "00_setup"),
        ("ada", "01_tensors"),
        ("zoe", "01_tensors"),
    ]
    assert read_grades(path) == {row.key: row for row in ROWS}


def test_a_row_that_cannot_be_read_is_named(tmp_path):
    path = tmp_path / "grades.csv"
    path.write_text(",".join(FIELDS) + "\nada,00_setup,lots,4.0,ok,,,\n")
    with pytest.raises(ValueError, match="grades.csv: a row cannot be read.*lots"):
        read_grades(path)


def _fail(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary_file(
    tmp_path, monkeypatch, where
):
    path = tmp_path / "grades.csv"
    write_grades(ROWS[:1], path)
    before = path.read_bytes()
    monkeypatch.setattr(os, where, _fail)  # the disk fills up while the new file is written
    with pytest.raises(OSError, match="No space left"):
        write_grades(ROWS, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]
    assert read_grades(path) == {ROWS[0].key: ROWS[0]}


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fail)
    with pytest.raises(OSError, match="No space left"):
        write_grades(ROWS, tmp_path / "grades.csv")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []

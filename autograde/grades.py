"""grades.csv: one row per submission, what grading decided about it.

A row holds the score, or 0 with a status naming the problem (`autograde.submission`
lists the statuses). The file is sorted by student and assignment and always rewritten
whole through the course's atomic writer (`course.files`): a reader, or a run stopped
half-way, finds the previous file or the new one, never part of one. A run reads the
rows already there and grades only what has none.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from course import files

GRADES = "grades.csv"
# Student ids become folder names and gradebook keys: keep them boring.
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")


@dataclass
class Row:
    student_id: str
    assignment: str
    score: float
    max_score: float
    status: str  # one of autograde.submission.STATUSES
    submitted_at: str = ""  # nbgrader's timestamp.txt, when the submission had one
    late_seconds: float = 0.0  # past the assignment's due date, per the gradebook
    notes: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.student_id, self.assignment

    def failed(self, status: str, note: str) -> Row:
        """This row for a submission with a problem: a score of 0, `status` and `note`."""
        return replace(self, score=0.0, status=status, notes=note)


FIELDS = tuple(f.name for f in fields(Row))  # the columns of grades.csv, in order


def read_grades(path: Path) -> dict[tuple[str, str], Row]:
    """The rows of an existing grades.csv (from a run that may have been stopped)."""
    if not path.is_file():
        return {}
    rows = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            try:
                values = {f.name: record.get(f.name) or f.default for f in fields(Row)}
                values["score"], values["max_score"] = (
                    float(values["score"]),
                    float(values["max_score"]),
                )
                values["late_seconds"] = float(values["late_seconds"] or 0.0)
                row = Row(**values)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: a row cannot be read ({record}): {err}") from err
            rows[row.key] = row
    return rows


def write_grades(rows: Iterable[Row], path: Path) -> None:
    """grades.csv, sorted, written atomically: the old file stays whole if writing fails."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=FIELDS)
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r.key):
        writer.writerow(asdict(row))
    files.write_text(path, text.getvalue())

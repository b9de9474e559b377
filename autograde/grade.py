"""``grade``: autograde a folder of submissions into a CSV and feedback pages.

SUBMISSIONS holds ``<student>/<assignment>/<notebook>.ipynb``. Each student's assignment is
autograded in its own nbgrader process with a time limit, so one broken, endless or
crashing submission never stops the others. Scores come from the gradebook, never from
nbgrader's exit code (``autograde`` exits 1 whenever any cell fails).
"""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import notebooks
from .workspace import REPO, SOLUTIONS, CourseFolder, assignments, run

FIELDS = ("student_id", "assignment", "score", "max_score", "status")
# Student ids become folder names and gradebook keys: keep them boring.
_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")


@dataclass
class Row:
    student_id: str
    assignment: str
    score: float
    max_score: float
    status: str  # ok | missing | invalid | timeout | error | unknown-assignment


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _max_score(db_url: str, assignment: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        return float(gb.find_assignment(assignment).max_score)


def _submission_score(db_url: str, assignment: str, student: str) -> float | None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url) as gb:
        try:
            return float(gb.find_submission(assignment, student).score)
        except MissingEntry:
            return None


def grade(
    submissions: Path,
    out: Path,
    timeout: float = 900.0,
    cell_timeout: int = 120,
    log=print,
    solutions: Path = SOLUTIONS,
) -> list[Row]:
    """Grade every ``<student>/<assignment>`` under ``submissions``; write ``out/grades.csv``.

    ``out`` also receives ``feedback/<student>/<assignment>/<notebook>.html`` and
    ``logs/<student>__<assignment>.log``. It must lie outside the repository.
    """
    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {submissions}")
    if _inside(out, REPO):
        raise ValueError(f"--out {out} is inside the repository; grade into another folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    known = set(assignments(solutions))
    work = [
        (student.name, folder.name, folder)
        for student in sorted(p for p in submissions.iterdir() if p.is_dir())
        for folder in sorted(p for p in student.iterdir() if p.is_dir())
    ]
    rows: list[Row] = []

    def record(row: Row) -> None:
        # grades.csv is rewritten (atomically) after every submission: if grading is
        # interrupted, what was graded so far is on disk.
        rows.append(row)
        _write_csv(rows, out / "grades.csv")

    with CourseFolder(exec_timeout=cell_timeout) as course:
        for name in sorted({a for _, a, _ in work} & known):
            course.add_source(name, solutions)
            course.generate(name)
        for student, assignment, folder in work:
            logfile = out / "logs" / f"{student}__{assignment}.log"
            if assignment not in known:
                log(f"{student}/{assignment}: no such assignment (known: {sorted(known)})")
                record(Row(student, assignment, 0.0, 0.0, "unknown-assignment"))
                continue
            max_score = _max_score(course.db_url, assignment)
            if not _STUDENT_ID.match(student):
                log(f"{student!r}: student ids are letters, digits and _.@+- only; skipped")
                record(Row(student, assignment, 0.0, max_score, "invalid"))
                continue
            status, notes = _stage(course, student, assignment, folder)
            if status != "ok":
                logfile.write_text("\n".join(notes) + "\n")
                log(f"{student}/{assignment}: {status} ({'; '.join(notes)})")
                record(Row(student, assignment, 0.0, max_score, status))
                continue
            log(f"{student}/{assignment}: autograding")
            result = run(
                ["autograde", assignment, "--student", student, "--force"],
                cwd=course.root,
                timeout=timeout,
            )
            logfile.write_text("\n".join(notes + [result.output]))
            score = _submission_score(course.db_url, assignment, student)
            graded = course.root / "autograded" / student / assignment
            if result.timed_out:
                status = "timeout"
            elif score is None or not graded.is_dir():
                # nbgrader records a zero before running anything and removes the autograded
                # folder when grading fails (a dead kernel, say): that is an error, not a 0.
                status = "error"
            record(Row(student, assignment, score or 0.0, max_score, status))
            log(f"{student}/{assignment}: {status}, {score or 0.0:g}/{max_score:g}")
        for assignment in sorted({r.assignment for r in rows if r.status == "ok"}):
            _feedback(course, assignment, out, log)
    _write_csv(rows, out / "grades.csv")  # also when there was nothing to grade
    return rows


def _stage(course: CourseFolder, student: str, assignment: str, folder: Path):
    """Copy a submission into the course; drop notebooks that cannot be read."""
    expected = {p.name for p in (course.root / "source" / assignment).glob("*.ipynb")}
    dest = course.root / "submitted" / student / assignment
    dest.mkdir(parents=True, exist_ok=True)
    notes, good = [], 0
    for nb in sorted(folder.glob("*.ipynb")):
        if nb.name not in expected:
            notes.append(f"{nb.name}: not part of {assignment}, ignored")
            continue
        try:
            notebooks.read(nb)
        except notebooks.NotebookError as err:
            notes.append(str(err))
            continue
        shutil.copy2(nb, dest / nb.name)
        good += 1
    missing = expected - {p.name for p in dest.glob("*.ipynb")}
    notes += [f"{name}: not submitted" for name in sorted(missing)]
    if good == 0:
        return ("invalid" if any(folder.glob("*.ipynb")) else "missing"), notes
    return "ok", notes


def _feedback(course: CourseFolder, assignment: str, out: Path, log=print) -> None:
    """Feedback pages for every autograded submission of ``assignment`` (one nbgrader run)."""
    result = run(["generate_feedback", assignment, "--force"], cwd=course.root)
    (out / "logs" / f"feedback__{assignment}.log").write_text(result.output)
    if result.returncode != 0:
        log(f"{assignment}: generate_feedback failed; see logs/feedback__{assignment}.log")
    for made in sorted((course.root / "feedback").glob(f"*/{assignment}")):
        target = out / "feedback" / made.parent.name / assignment
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(made, target)


def _write_csv(rows: list[Row], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
    tmp.replace(path)

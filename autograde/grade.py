"""``grade``: autograde a class's submissions into a gradebook, grades.csv and feedback.

SUBMISSIONS holds ``<student>/<assignment>/<notebook>.ipynb`` (and, optionally, nbgrader's
``timestamp.txt`` beside them). Student notebooks are untrusted code, so each submission is
graded on its own:

- it is checked against the release first (a removed, doubled or edited graded cell makes
  it ungradable as handed in; so does a notebook that is not valid JSON);
- nbgrader autogrades it in a private course folder, with a time limit for every cell and
  one for the whole submission, and its kernel runs in the sandbox of
  `autograde.sandbox` (a scratch folder, a scrubbed environment, resource limits and, where
  the machine allows it, another user, hidden instructor folders and no network);
- whatever the kernel left running is killed, and the result becomes exactly one row of
  ``OUT/grades.csv``: the score, or 0 with a status naming the problem.

grades.csv is rewritten atomically after every row. A run that is stopped and started
again grades only the submissions without a row: nothing is graded twice, nothing lost.

`grade` ties the pieces together, each in a module of its own: `autograde.grades`
(grades.csv), `autograde.gradebook` (nbgrader's gradebook, roster, due dates),
`autograde.workers` (the threads that grade), `autograde.report` (feedback pages, score
plots); `autograde.options.GradeOptions` carries the run's settings to them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import cgroup, forkserver, notebooks, submission
from .gradebook import Gradebook, default_url, make_private, parse_due, read_roster
from .grades import FIELDS, GRADES, STUDENT_ID, Row, read_grades, write_grades
from .options import GradeOptions
from .report import FeedbackWriter, plot_scores
from .sandbox import Limits, isolation
from .workers import SOLUTION_ID, Submission, close_workers, run_workers, start_workers
from .workspace import REPO, SOLUTIONS, CourseFolder, assignments

__all__ = ["FIELDS", "Row", "grade"]  # FIELDS and Row: what a caller reads back


def grade(
    submissions: Path,
    out: Path,
    *,
    db: str | None = None,
    workers: int | None = None,
    timeout: float = 900.0,
    cell_timeout: int = 120,
    limits: Limits | None = None,
    hide_hidden_tests: bool = True,
    roster: Path | None = None,
    due: str | None = None,
    solutions: Path = SOLUTIONS,
    preload: bool | Sequence[str] = True,
    unsafe_no_sandbox: bool = False,
    check_solutions: bool = True,
    allow_library_answers: bool = False,
    log=print,
) -> list[Row]:
    """Grade every ``<student>/<assignment>`` under ``submissions`` into ``out``.

    ``out`` (outside the repository) receives grades.csv, gradebook.db (unless ``db`` is a
    database URL), ``feedback/<student>/<assignment>/*.html``, ``logs/``, ``autograded/``
    and a score histogram per assignment. ``workers`` submissions are graded at once
    (default: one more than the cores, at most 4: a worker also waits, for its kernel and
    the gradebook). ``roster``: a CSV of students (``id`` column) to add to the gradebook;
    a listed student with no submission gets a "missing" row for each assignment handed in
    by anyone. ``due``: the due date ("2026-12-01 17:00", UTC unless it names a zone) of
    every graded assignment; lateness comes from nbgrader's ``timestamp.txt`` files.
    ``preload``: each worker forks its kernels from a process that has imported, once,
    those of numpy, PyTorch and TensorFlow the assignments' code names
    (`autograde.forkserver`; or the modules named; none: no fork server), ~700 MB more
    memory per worker for ~5 s less CPU per submission. ``unsafe_no_sandbox``: grade even
    where the machine gives kernels no sandbox (`check_isolation`); every row's notes and
    feedback page then say so. ``check_solutions``: before any student, grade each
    assignment's solution in the same sandbox and refuse to go on unless it earns full marks
    with no failing cell (`autograde.workers.run_workers`). One run at a time may write
    ``out`` (a lock file there). ``allow_library_answers``: for self-paced use, an answer that
    uses the course library's own code for its exercise scores like any other (by default
    that exercise earns nothing: `autograde.submission.library_answers`). Returns the rows
    of grades.csv.
    """
    submissions, out, solutions = Path(submissions), Path(out), Path(solutions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {submissions}")
    if _inside(out, REPO):
        raise ValueError(f"--out {out} is inside the repository; grade into another folder")
    students = read_roster(roster) if roster else []
    due_date = parse_due(due) if due else None
    unsandboxed = check_isolation(unsafe_no_sandbox, log)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # the gradebook holds the hidden tests: only the grader reads it
    with run_lock(out):
        return _grade(
            submissions, out, solutions=solutions, students=students, roster=roster,
            due_date=due_date, db=db, workers=workers, timeout=timeout,
            cell_timeout=cell_timeout, limits=limits, hide_hidden_tests=hide_hidden_tests,
            preload=preload, unsandboxed=unsandboxed, check_solutions=check_solutions,
            allow_library_answers=allow_library_answers, log=log,
        )  # fmt: skip


def preload_for(preload: bool | Sequence[str], solutions: Path, names) -> tuple[str, ...]:
    """What the workers' fork servers import: the modules named, or for ``True`` those of
    `forkserver.PRELOAD` the code of the assignments ``names`` imports (`forkserver.wanted`)."""
    if preload is not True:
        return tuple(preload or ())
    sources = []
    for name in names:
        folder = solutions / name
        found = sorted(folder.glob("*.ipynb"))
        for path in found or [folder / f"{name}.py"]:
            if path.suffix == ".py":
                sources.append(path.read_text())
            else:
                nb = notebooks.read(path)
                sources += [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return forkserver.wanted(sources)


UNSANDBOXED_NOTE = "graded without a sandbox (--unsafe-no-sandbox)"


def check_isolation(unsafe: bool, log) -> bool:
    """Print what isolation this machine gives student kernels; refuse (RuntimeError) to
    grade without all of it unless `unsafe`. True when grading goes on unsandboxed.

    All of it: the kernel sees only what it needs (bubblewrap), has no network, its own
    /tmp and processes, and runs as a user of its own. Without root there is no user of its
    own, but nothing of the instructor's but its scratch folder is in its sight: enough."""
    report = isolation()
    words = ", ".join(f"{name.replace('_', ' ')}: {'yes' if ok else 'NO'}" for name, ok in
                      report.items())  # fmt: skip
    why_not = cgroup.available()
    memory = (
        f"memory limited per process (address space) only: {why_not}"
        if why_not
        else "memory also limited for a kernel's whole tree (control group)"
    )
    log(f"sandbox for student kernels: {words}; {memory}")
    spared = {"separate_user"} if report.get("allow_list") else set()
    missing = [name for name, ok in report.items() if not ok and name not in spared]
    if not missing:
        return False
    if not unsafe:
        remedy = (
            "Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) for a kernel that "
            "sees only what it needs, or pass"
            if not report.get("allow_list")
            else "Grade as root (e.g. with sudo), or pass"
        )
        raise RuntimeError(
            f"no full sandbox for student kernels on this machine ({', '.join(missing)} not "
            "available): a student's code could read what it should not (other courses, "
            "solutions, your files) or, run as you, rewrite the gradebook, grades.csv and "
            f"classmates' submissions. {remedy} --unsafe-no-sandbox to grade anyway; every "
            "row and feedback page then says so"
        )
    log(f"WARNING: {UNSANDBOXED_NOTE}: student code runs with your rights")
    return True


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold OUT/.grading.lock for the whole run: a second run on the same folder stops with
    a clear error instead of both rewriting grades.csv. Opened without following a link."""
    import fcntl

    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RuntimeError(
                f"another grading run (pid {holder}) is writing {out}: wait for it to end, "
                "or grade into another --out folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


LOCK_FILE = ".grading.lock"


def _grade(
    submissions: Path, out: Path, *, solutions: Path, students: list[dict], roster,
    due_date, db, workers, timeout, cell_timeout, limits, hide_hidden_tests, preload,
    unsandboxed: bool, check_solutions: bool, allow_library_answers: bool, log,
) -> list[Row]:  # fmt: skip
    """`grade`'s work, its arguments checked and the run lock on `out` held."""
    for sub in ("logs", "autograded"):
        (out / sub).mkdir(exist_ok=True)
    db_url = db or default_url(out)
    known = set(assignments(solutions))
    found = _handed_in(submissions, students)
    rows = read_grades(out / GRADES)
    if rows:
        log(f"{len(rows)} submission(s) already graded in {out / GRADES}: kept")
    lock = threading.Lock()
    pages: list[FeedbackWriter] = []  # once it runs, rows' feedback pages are made meanwhile

    def record(row: Row) -> None:
        if unsandboxed:
            row = replace(row, notes="; ".join(filter(None, [UNSANDBOXED_NOTE, row.notes])))
        with lock:
            rows[row.key] = row
            write_grades(rows.values(), out / GRADES)
        detail = f" ({row.notes})" if row.notes else ""
        score = f"{row.score:g}/{row.max_score:g}"
        log(f"{row.student_id}/{row.assignment}: {row.status}, {score}{detail}")
        for writer in pages:
            writer.add(row)

    pending = [key for key in sorted(found) if key not in rows]
    to_grade = tuple(sorted({a for _, a in pending} & known))
    preloaded = preload_for(preload, solutions, to_grade)
    if preload is True and to_grade:
        log(
            f"kernels are forked from a process that imported {', '.join(preloaded)}"
            if preloaded
            else "kernels start on their own: the assignments import none of "
            f"{', '.join(n for n in forkserver.PRELOAD if '.' not in n)}"
        )
    book = Gradebook(db_url)
    with CourseFolder(db_url=db_url) as main_course, contextlib.ExitStack() as stack:
        options = GradeOptions(
            out=out,
            db_url=db_url,
            solutions=solutions,
            release=main_course.root / "release",
            assignments=to_grade,
            timeout=timeout,
            cell_timeout=cell_timeout,
            limits=limits or Limits(),
            hide=_hidden(solutions, out, submissions, roster),
            preload=preloaded,
            workers=workers or min(4, (os.cpu_count() or 1) + 1),
            hide_hidden_tests=hide_hidden_tests,
            unsandboxed=unsandboxed,
            allow_library_answers=allow_library_answers,
        )
        # The workers' fork servers import their libraries while nbgrader generates the
        # assignments below, on a core that would otherwise idle.
        to_check = options.assignments if check_solutions else ()
        wanted = min(options.workers, len(pending) + len(to_check)) if options.assignments else 0
        started = start_workers(options, wanted)
        stack.callback(close_workers, started)  # those run_workers was not given
        for name in sorted({a for _, a in found} & known):
            main_course.add_source(name, solutions)
            main_course.generate(name)  # fills (or refreshes) the gradebook
            if due_date:
                book.set_due(name, due_date)
            make_private(db_url)
        if students:
            book.add_students(students)
        # Pages are made beside the workers as rows are recorded (the gradebook is filled
        # by now): not all in one run after the last row.
        feedback = stack.enter_context(FeedbackWriter(options, log))
        pages.append(feedback)
        to_run: queue.Queue[Submission] = queue.Queue()
        max_scores: dict[str, float] = {}
        for student, assignment in pending:
            folder = found[(student, assignment)]
            if assignment not in known:
                record(Row(student, assignment, 0.0, 0.0, "unknown-assignment",
                           notes=f"known: {', '.join(sorted(known))}"))  # fmt: skip
                continue
            if assignment not in max_scores:  # one gradebook read per assignment, not row
                max_scores[assignment] = book.max_score(assignment)
            row = _ungradable(student, assignment, folder, options.release, max_scores[assignment])
            if row is not None:
                record(row)
            else:
                to_run.put((student, assignment, folder))
        if not to_run.empty():
            # Every student is in the gradebook before two workers could both add the same
            # one (two assignments of one student at once: a UNIQUE constraint error).
            ids = sorted({s for s, _, _ in to_run.queue} | {SOLUTION_ID})
            book.add_students([{"id": sid} for sid in ids])
            checked = tuple(sorted({a for _, a, _ in to_run.queue})) if check_solutions else ()
            try:
                run_workers(to_run, options, record, log, solutions=checked, started=started)
            finally:
                book.remove_student(SOLUTION_ID)  # the solutions' check leaves no row
        feedback.finish(rows.values())  # and the pages an earlier run did not write
    write_grades(rows.values(), out / GRADES)  # also when there was nothing to grade
    for assignment in sorted({a for _, a in rows} & known):
        plot_scores([r for r in rows.values() if r.assignment == assignment], out)
    return sorted(rows.values(), key=lambda r: r.key)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _handed_in(submissions: Path, students: list[dict]) -> dict[tuple[str, str], Path | None]:
    """Every (student, assignment) to have a row: each submission folder, and for each
    roster student without one, every assignment anyone handed in (folder None)."""
    found: dict[tuple[str, str], Path | None] = {
        (student.name, folder.name): folder
        for student in sorted(p for p in submissions.iterdir() if p.is_dir())
        for folder in sorted(p for p in student.iterdir() if p.is_dir())
    }
    handed = sorted({a for _, a in found})
    for student in students:
        for assignment in handed:
            found.setdefault((student["id"], assignment), None)
    return found


def _hidden(solutions: Path, out: Path, submissions: Path, roster: Path | None) -> tuple[str, ...]:
    """The instructor's folders a student kernel sees as empty ones; never a folder that
    holds the repository (the kernel imports the course library from it)."""
    hide = [str(solutions), str(REPO / "solutions"), str(REPO / ".git"), str(out)]
    hide += [str(submissions)] + ([str(Path(roster).parent)] if roster else [])
    return tuple(h for h in dict.fromkeys(hide) if not _inside(REPO, Path(h)))


def _ungradable(student, assignment, folder, release: Path, max_score: float) -> Row | None:
    """The row of a submission that cannot be graded as handed in; None if it can."""
    row = Row(student, assignment, 0.0, max_score, "ok")
    if not STUDENT_ID.match(student):
        return row.failed("invalid-student-id", "ids are letters, digits and _.@+- only")
    if student == SOLUTION_ID:
        return row.failed("invalid-student-id", f"{SOLUTION_ID} is the grader's own id")
    unsafe = submission.folder_problem(folder) if folder else None
    if unsafe:
        return row.failed("refused-file", unsafe)
    expected = sorted((release / assignment).glob("*.ipynb"))
    handed_in = {nb.name for nb in folder.glob("*.ipynb")} if folder else set()
    if not handed_in & {nb.name for nb in expected}:
        extra = f" (found {', '.join(sorted(handed_in))})" if handed_in else ""
        return row.failed("missing", f"no {', '.join(nb.name for nb in expected)}{extra}")
    for release_nb in expected:
        if release_nb.name not in handed_in:
            continue  # a notebook not handed in scores 0 in nbgrader: no reason to refuse
        try:
            text = submission.read_handed_in(folder / release_nb.name)
            nb = notebooks.parse(text, folder / release_nb.name)
        except submission.RefusedFile as err:
            return row.failed("refused-file", str(err))
        except notebooks.NotebookError as err:
            return row.failed("invalid-notebook", str(err).replace(str(folder) + "/", ""))
        problem = submission.structure_problem(nb, notebooks.read(release_nb))
        if problem:
            return row.failed(*problem)
    return None

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
The gradebook is ``OUT/gradebook.db`` (SQLite) unless ``db`` names a database URL
(``postgresql://user:password@host/name``). Scores come from the gradebook, never from
nbgrader's exit code (``autograde`` exits 1 whenever any cell fails).
"""

from __future__ import annotations

import contextlib
import csv
import os
import queue
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import forkserver, notebooks, sandbox, submission
from .runner import Runner
from .workspace import REPO, SOLUTIONS, CourseFolder, assignments, run

FIELDS = (
    "student_id",
    "assignment",
    "score",
    "max_score",
    "status",
    "submitted_at",
    "late_seconds",
    "notes",
)
GRADES = "grades.csv"
# Student ids become folder names and gradebook keys: keep them boring.
_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")


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


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def read_grades(path: Path) -> dict[tuple[str, str], Row]:
    """The rows of an existing grades.csv (from a run that may have been stopped)."""
    if not path.is_file():
        return {}
    rows = {}
    with path.open(newline="") as fh:
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


def write_grades(rows, path: Path) -> None:
    """grades.csv, sorted, written to a temporary file first and then renamed over."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r.key):
            writer.writerow(asdict(row))
    tmp.replace(path)


class _Gradebook:
    """The few gradebook reads and writes grading needs (each opens its own connection)."""

    def __init__(self, url: str):
        self.url = url

    def _open(self):
        from nbgrader.api import Gradebook

        return Gradebook(self.url)

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

    def set_due(self, assignment: str, due) -> None:
        with self._open() as gb:
            gb.update_or_create_assignment(assignment, duedate=due)

    def add_students(self, students: list[dict]) -> None:
        with self._open() as gb:
            for student in students:
                student = dict(student)
                gb.update_or_create_student(student.pop("id"), **student)


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
            if not _STUDENT_ID.match(sid):
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


# --- one worker: a private course folder and a sandbox user --------------------------------


class _Worker:
    """Grades submissions one at a time in its own course folder and sandbox."""

    def __init__(self, index, db_url, names, solutions, release_root, cell_timeout, limits, hide,
                 preload=True):  # fmt: skip
        self.index = index
        modules = forkserver.PRELOAD if preload is True else tuple(preload or ())
        self.release_root = release_root
        self.user = sandbox.SandboxUser() if os.geteuid() == 0 else None
        uid, gid = (self.user.uid, self.user.gid) if self.user else (None, None)
        self.uid = uid
        self.scratch_parent = sandbox.scratch_parent(index)
        scratch = self.scratch_parent / "work"
        self.course = CourseFolder(exec_timeout=cell_timeout, db_url=db_url)
        self.settings = sandbox.Settings(
            scratch=str(scratch),
            repo=str(REPO),
            python_path=[str(REPO)],
            uid=uid,
            gid=gid,
            hide=[*hide, str(self.course.root)],
            limits=limits,
            fork_server=str(self.scratch_parent / "fork-server") if modules else None,
        )
        settings_file = self.course.root / "sandbox.json"
        self.settings.write(settings_file)
        self.jupyter_path = sandbox.kernel_spec(self.course.root / "jupyter", settings_file)
        with (self.course.root / "nbgrader_config.py").open("a") as fh:
            fh.write(
                f"c.Execute.kernel_name = {sandbox.KERNEL_NAME!r}\n"
                "c.KernelManager.transport = 'ipc'\n"  # Unix sockets: no network needed
                f"c.KernelManager.ip = {str(scratch / '.ipc')!r}\n"
                "c.Execute.interrupt_on_timeout = True\n"
                # Every output is in once the last cell ran: stop the kernel at once rather
                # than wait seconds for TensorFlow's and PyTorch's teardown at exit.
                "c.Execute.shutdown_kernel = 'immediate'\n"
            )
        for name in names:
            self.course.add_source(name, solutions)
        self.runner = Runner(self.course.root, env={"JUPYTER_PATH": str(self.jupyter_path)})
        self.fork_server = None
        if modules:  # kernels forked with numpy, PyTorch and TensorFlow already imported
            self.fork_server = forkserver.ForkServer(
                self.settings, settings_file, self.runner.env, self.course.root / "fork.log",
                modules,
            )  # fmt: skip
            self.fork_server.start()

    def close(self) -> None:
        self.runner.close()
        if self.fork_server is not None:
            self.fork_server.close()
        if self.uid is not None:
            sandbox.kill_user(self.uid)
            self.user.release()
        self.course.__exit__(None, None, None)
        shutil.rmtree(self.scratch_parent, ignore_errors=True)

    def grade(self, student, assignment, folder, timeout, out, book) -> Row:
        """Autograde one staged submission; the row it ends as."""
        root = self.course.root
        dest = root / "submitted" / student / assignment
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for nb in folder.glob("*.ipynb"):
            shutil.copy2(nb, dest / nb.name)
        if (folder / "timestamp.txt").is_file():
            shutil.copy2(folder / "timestamp.txt", dest / "timestamp.txt")
        graded = root / "autograded" / student / assignment
        shutil.rmtree(graded, ignore_errors=True)
        sandbox.prepare_scratch(self.settings, self.release_root / assignment)
        server = self.fork_server
        if server is not None and not server.error and not server.alive():
            server.start()  # it died (killed from outside): once more, or kernels go unaided
        try:
            log = out / "logs" / f"{student}__{assignment}.log"
            result = self.runner.autograde(assignment, student, log, timeout)
        finally:
            if self.uid is not None:
                sandbox.kill_user(self.uid)  # forks and sleepers the kernel left
            shutil.rmtree(self.settings.scratch, ignore_errors=True)
        max_score = book.max_score(assignment)
        found = book.result(assignment, student)
        score, stamp, late = found if found else (0.0, "", 0.0)
        row = Row(student, assignment, score, max_score, "ok", stamp, late)
        if result.timed_out:
            return _failed(row, "timeout", f"the notebook ran past {timeout:g} s")
        if found is None or not graded.is_dir():
            # nbgrader records a zero before running anything and removes the autograded
            # folder when grading fails (a dead kernel, say): that is not a score.
            died = "DeadKernelError" in result.output or "Kernel died" in result.output
            if died:
                return _failed(row, "kernel-died", "the kernel died; see the log")
            return _failed(row, "error", "nbgrader could not grade it; see the log")
        for nb in sorted(graded.glob("*.ipynb")):
            hit = submission.limit_hit(notebooks.read(nb))
            if hit:
                return _failed(row, *hit)
        keep = out / "autograded" / student / assignment  # for feedback, now or after a stop
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(graded, keep)
        return row


def _failed(row: Row, status: str, note: str) -> Row:
    row.score, row.status, row.notes = 0.0, status, note
    return row


# --- the class ---------------------------------------------------------------------------


def _check(student, assignment, folder, release_root, max_score) -> Row | None:
    """The row of a submission that cannot be graded as handed in; None if it can."""
    row = Row(student, assignment, 0.0, max_score, "ok")
    if not _STUDENT_ID.match(student):
        return _failed(row, "invalid-student-id", "ids are letters, digits and _.@+- only")
    expected = sorted((release_root / assignment).glob("*.ipynb"))
    handed_in = {nb.name for nb in folder.glob("*.ipynb")} if folder else set()
    if not handed_in & {nb.name for nb in expected}:
        extra = f" (found {', '.join(sorted(handed_in))})" if handed_in else ""
        return _failed(row, "missing", f"no {', '.join(nb.name for nb in expected)}{extra}")
    for release_nb in expected:
        if release_nb.name not in handed_in:
            continue  # a notebook not handed in scores 0 in nbgrader: no reason to refuse
        try:
            nb = notebooks.read(folder / release_nb.name)
        except notebooks.NotebookError as err:
            return _failed(row, "invalid-notebook", str(err).replace(str(folder) + "/", ""))
        problem = submission.structure_problem(nb, notebooks.read(release_nb))
        if problem:
            return _failed(row, *problem)
    return None


def grade(
    submissions: Path,
    out: Path,
    *,
    db: str | None = None,
    workers: int | None = None,
    timeout: float = 900.0,
    cell_timeout: int = 120,
    limits: sandbox.Limits | None = None,
    hide_hidden_tests: bool = True,
    roster: Path | None = None,
    due: str | None = None,
    solutions: Path = SOLUTIONS,
    preload: bool | Sequence[str] = True,
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
    ``preload``: each worker forks its kernels from a process that has imported numpy,
    PyTorch and TensorFlow once (`autograde.forkserver`; or the modules named), ~700 MB
    more memory per worker for ~5 s less CPU per submission. Returns the rows of grades.csv.
    """
    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {submissions}")
    if _inside(out, REPO):
        raise ValueError(f"--out {out} is inside the repository; grade into another folder")
    students = read_roster(roster) if roster else []
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # the gradebook holds the hidden tests: only the grader reads it
    for sub in ("logs", "autograded"):
        (out / sub).mkdir(exist_ok=True)
    db_url = db or f"sqlite:///{(out / 'gradebook.db').resolve()}"
    limits = limits or sandbox.Limits()
    workers = workers or min(4, (os.cpu_count() or 1) + 1)
    known = set(assignments(solutions))
    found = {
        (student.name, folder.name): folder
        for student in sorted(p for p in submissions.iterdir() if p.is_dir())
        for folder in sorted(p for p in student.iterdir() if p.is_dir())
    }
    handed = sorted({a for _, a in found})
    for student in students:  # roster students who handed in nothing
        for assignment in handed:
            found.setdefault((student["id"], assignment), None)
    rows = read_grades(out / GRADES)
    if rows:
        log(f"{len(rows)} submission(s) already graded in {out / GRADES}: kept")
    lock = threading.Lock()

    def record(row: Row) -> None:
        with lock:
            rows[row.key] = row
            write_grades(rows.values(), out / GRADES)
        detail = f" ({row.notes})" if row.notes else ""
        score = f"{row.score:g}/{row.max_score:g}"
        log(f"{row.student_id}/{row.assignment}: {row.status}, {score}{detail}")

    pending = [key for key in sorted(found) if key not in rows]
    names = sorted({a for _, a in pending} & known)
    book = _Gradebook(db_url)
    with CourseFolder(db_url=db_url) as main_course:
        for name in sorted({a for _, a in found} & known):
            main_course.add_source(name, solutions)
            main_course.generate(name)  # fills (or refreshes) the gradebook
            if due:
                book.set_due(name, _parse_due(due))
            _private(db_url)
        if students:
            book.add_students(students)
        release_root = main_course.root / "release"
        to_run = queue.Queue()
        for student, assignment in pending:
            if assignment not in known:
                record(Row(student, assignment, 0.0, 0.0, "unknown-assignment",
                           notes=f"known: {', '.join(sorted(known))}"))  # fmt: skip
                continue
            row = _check(
                student,
                assignment,
                found[(student, assignment)],
                release_root,
                book.max_score(assignment),
            )
            if row is not None:
                record(row)
            else:
                to_run.put((student, assignment, found[(student, assignment)]))
        if not to_run.empty():
            # Every student is in the gradebook before two workers could both add the same
            # one (two assignments of one student at once: a UNIQUE constraint error).
            book.add_students([{"id": sid} for sid in sorted({s for s, _, _ in to_run.queue})])
            hide = [str(solutions), str(REPO / "solutions"), str(REPO / ".git"), str(out)]
            hide += [str(submissions)] + ([str(Path(roster).parent)] if roster else [])
            hide = [h for h in dict.fromkeys(hide) if not _inside(REPO, Path(h))]
            _run_workers(
                to_run, min(workers, to_run.qsize()), db_url, names, solutions,
                release_root, cell_timeout, limits, hide, timeout, out, book, record, log,
                preload,
            )  # fmt: skip
        _feedback(rows, db_url, solutions, out, hide_hidden_tests, log)
    write_grades(rows.values(), out / GRADES)  # also when there was nothing to grade
    for assignment in sorted({a for _, a in rows} & known):
        plot_scores([r for r in rows.values() if r.assignment == assignment], out)
    return sorted(rows.values(), key=lambda r: r.key)


def _run_workers(to_run, count, db_url, names, solutions, release_root, cell_timeout,
                 limits, hide, timeout, out, book, record, log, preload):  # fmt: skip
    errors = []
    live = []

    def work(index: int) -> None:
        worker = None
        try:
            worker = _Worker(
                index, db_url, names, solutions, release_root, cell_timeout, limits, hide,
                preload,
            )  # fmt: skip
            if worker.fork_server is not None and worker.fork_server.error:
                log(f"worker {index}: {worker.fork_server.error}; kernels import on their own")
            live.append(worker)
            while not errors:
                try:
                    student, assignment, folder = to_run.get_nowait()
                except queue.Empty:
                    return
                log(f"{student}/{assignment}: autograding")
                row = worker.grade(student, assignment, folder, timeout, out, book)
                if errors:  # stopped while it ran: not a grade; the next run redoes it
                    return
                record(row)
        except BaseException as err:  # stop the others; re-raised in the main thread
            errors.append(err)
        finally:
            if worker is not None:
                worker.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except BaseException:  # Ctrl-C: stop every kernel now; the workers clean up and leave
        errors.append(KeyboardInterrupt())
        for worker in list(live):
            worker.runner.kill()
        for thread in threads:
            thread.join(30)
        raise
    real = [e for e in errors if not isinstance(e, KeyboardInterrupt)]
    if real:
        raise real[0]


def _private(db_url: str) -> None:
    """A SQLite gradebook readable by its owner only."""
    if db_url.startswith("sqlite:///"):
        with contextlib.suppress(OSError):
            Path(db_url.removeprefix("sqlite:///")).chmod(0o600)


def _parse_due(text: str):
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise ValueError(f"due date {text!r}: use YYYY-MM-DD HH:MM[:SS][+HH:MM]") from err


def _feedback(rows, db_url, solutions, out, hide_hidden_tests, log) -> None:
    """Feedback pages for every graded row that has none yet (one nbgrader run each)."""
    from .feedback import config_lines

    todo = {}
    for row in rows.values():
        page = out / "feedback" / row.student_id / row.assignment
        kept = out / "autograded" / row.student_id / row.assignment
        if row.status == "ok" and kept.is_dir() and not page.is_dir():
            todo.setdefault(row.assignment, []).append(row.student_id)
    for assignment, students in sorted(todo.items()):
        extra = config_lines(hide_hidden_tests)
        with CourseFolder(db_url=db_url, extra_config=extra) as course:
            course.add_source(assignment, solutions)
            for student in students:
                shutil.copytree(
                    out / "autograded" / student / assignment,
                    course.root / "autograded" / student / assignment,
                )
            result = run(["generate_feedback", assignment, "--force"], cwd=course.root)
            (out / "logs" / f"feedback__{assignment}.log").write_text(result.output)
            if result.returncode != 0:
                log(f"{assignment}: generate_feedback failed; see logs/feedback__{assignment}.log")
            for made in sorted((course.root / "feedback").glob(f"*/{assignment}")):
                target = out / "feedback" / made.parent.name / assignment
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(made, target)


def plot_scores(rows: list[Row], out: Path) -> Path | None:
    """A histogram of one assignment's scores, ``OUT/scores_<assignment>.png``."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assignment, top = rows[0].assignment, max(r.max_score for r in rows)
    graded = [r.score for r in rows if r.status == "ok"]
    others = len(rows) - len(graded)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = max(1, min(20, int(top) + 1)) if top else 1
    ax.hist(graded, bins=bins, range=(0, top or 1), color="tab:blue", edgecolor="white")
    ax.set_xlabel(f"score (of {top:g})")
    ax.set_ylabel("students")
    ax.set_title(f"{assignment}: {len(graded)} graded, {others} with a problem (score 0)")
    fig.tight_layout()
    path = out / f"scores_{assignment}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""What a graded class gets besides grades.csv: a feedback page per graded submission and
a histogram of each assignment's scores.

Feedback pages are nbgrader's ``generate_feedback`` run on the graded notebooks kept in
``OUT/autograded/``, in a course folder of its own; unless the instructor asks otherwise
they leave out the hidden tests, and student HTML on them is always cleaned
(`autograde.feedback`). A `FeedbackWriter` makes them while the class is graded: one
nbgrader process (`autograde.runner.Runner`) beside the workers takes the rows as they
are recorded, a few at a time (`BATCH`), so the pages are not left to one long run after
the last row. Its output for an
assignment goes to ``OUT/logs/feedback__<assignment>.log``. A page once written is kept: a
run that is stopped and started again writes only the missing ones.
"""

from __future__ import annotations

import queue
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from .grades import Row
from .options import GradeOptions
from .runner import Runner
from .submission import SCORED
from .workspace import CourseFolder

FEEDBACK_TIMEOUT = 300.0  # seconds for one batch of pages: a stuck nbgrader is restarted
# Pages made by one nbgrader call while the class is graded: each call costs about 0.1 s
# of CPU besides its pages, and the last batch waits for the last row.
BATCH = 6


class FeedbackWriter:
    """Feedback pages written in a thread of their own: `add` a row as it is recorded (from
    any thread), `finish` with every row of the run; each graded row gets its page once.

    Use as a context manager: leaving it stops the nbgrader process and removes its course
    folder, pages written or not (Ctrl-C, a worker's error)."""

    def __init__(self, options: GradeOptions, log: Callable[[str], None]):
        from .feedback import config_lines

        self.options = options
        self.log = log
        self.course = CourseFolder(
            db_url=options.db_url, extra_config=config_lines(options.hide_hidden_tests)
        )
        self.runner = Runner(self.course.root)
        self.runner.start()  # nbgrader imported while the first submissions are graded
        self._queue: queue.Queue[Row | object | None] = queue.Queue()
        self._assignments: set[str] = set()  # set up in the course, log started
        # Pages tried since `finish` began: one that fails then is not tried again. One
        # that failed before (the gradebook busy with the workers, say) is, once, then.
        self._tried: set[tuple[str, str]] = set()
        self._finishing = False
        self._stop = threading.Event()  # leaving early: no more pages
        self._thread = threading.Thread(target=self._write, name="feedback", daemon=True)
        self._thread.start()

    def __enter__(self) -> FeedbackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._queue.put(None)
        self.runner.kill()  # a page being made is not waited for
        self._thread.join(30)
        self.runner.close()
        self.course.__exit__(None, None, None)

    def add(self, row: Row) -> None:
        """Write `row`'s page soon, if it is a graded row without one."""
        self._queue.put(row)

    def finish(self, rows: Iterable[Row]) -> None:
        """Write the page of every row of `rows` that needs one (rows graded by an earlier
        run too), and return once every page asked for is written or has failed."""
        self._queue.put(FINISHING)
        for row in rows:
            self._queue.put(row)
        self._queue.put(None)
        self._thread.join()

    def _needs_page(self, row: Row) -> bool:
        if row.key in self._tried:
            return False
        out = self.options.out
        page = out / "feedback" / row.student_id / row.assignment
        kept = out / "autograded" / row.student_id / row.assignment
        return row.status in SCORED and kept.is_dir() and not page.is_dir()

    def _write(self) -> None:
        waiting: list[Row] = []  # rows whose pages are made together, by one nbgrader call
        while not self._stop.is_set():
            item = self._queue.get()
            if item is FINISHING:
                self._finishing = True
            elif item is not None and self._needs_page(item):
                if item.key not in {row.key for row in waiting}:
                    waiting.append(item)
            if waiting and (item is None or len(waiting) >= BATCH):
                self._pages(waiting)
                waiting = []
            if item is None:
                return

    def _pages(self, rows: list[Row]) -> None:
        students: dict[str, list[str]] = {}  # assignment -> students
        for row in rows:
            students.setdefault(row.assignment, []).append(row.student_id)
            if self._finishing:
                self._tried.add(row.key)
        for assignment, names in sorted(students.items()):
            try:
                problems = self._make(assignment, names)
            except Exception as err:  # one batch's problem is not the others'
                problems = {name: f"no feedback page: {err}" for name in names}
            if self._finishing and not self._stop.is_set():
                for name, problem in sorted(problems.items()):
                    self.log(f"{name}/{assignment}: {problem}")

    def _make(self, assignment: str, students: list[str]) -> dict[str, str]:
        """Write the pages of `students` for `assignment`; what went wrong, by student."""
        options, root = self.options, self.course.root
        log_file = options.out / "logs" / f"feedback__{assignment}.log"
        if assignment not in self._assignments:
            self.course.add_source(assignment, options.solutions)
            log_file.write_bytes(b"")  # this run's pages only, as one log per assignment
            self._assignments.add(assignment)
        for student in students:
            graded = root / "autograded" / student / assignment
            shutil.rmtree(graded, ignore_errors=True)
            shutil.copytree(options.out / "autograded" / student / assignment, graded)
        # One student, or (None) every notebook in the course folder: just these students,
        # since each batch's copies are removed once its pages are out.
        only = students[0] if len(students) == 1 else None
        self.runner.generate_feedback(assignment, only, log_file, FEEDBACK_TIMEOUT)
        problems = {}
        for student in students:
            graded = root / "autograded" / student / assignment
            made = root / "feedback" / student / assignment
            if not made.is_dir():
                problems[student] = f"generate_feedback failed; see logs/feedback__{assignment}.log"
            else:
                if options.unsandboxed:
                    for page in made.glob("*.html"):
                        page.write_text(_with_banner(page.read_text(), UNSANDBOXED_BANNER))
                target = options.out / "feedback" / student / assignment
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(made, target)
            shutil.rmtree(graded, ignore_errors=True)
            shutil.rmtree(made, ignore_errors=True)
        return problems


# Put in a `FeedbackWriter`'s queue by `finish`: the rows after it are the last tries.
FINISHING = object()


def write_feedback(rows: Iterable[Row], options: GradeOptions, log: Callable[[str], None]) -> None:
    """``OUT/feedback/<student>/<assignment>/`` for every graded row that has none yet."""
    with FeedbackWriter(options, log) as writer:
        writer.finish(rows)


UNSANDBOXED_BANNER = (
    '<p style="border:2px solid #b00;padding:0.5em"><strong>Graded without a sandbox</strong>'
    " (--unsafe-no-sandbox): this notebook ran with the grader's own rights.</p>"
)


def _with_banner(page: str, banner: str) -> str:
    """The HTML page with `banner` first in its body."""
    at = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    return page[:at] + banner + page[at:]


def plot_scores(rows: list[Row], out: Path) -> Path | None:
    """A histogram of one assignment's scores, ``OUT/scores_<assignment>.png``."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assignment, top = rows[0].assignment, max(r.max_score for r in rows)
    graded = [r.score for r in rows if r.status in SCORED]
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

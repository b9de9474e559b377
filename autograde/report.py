"""What a graded class gets besides grades.csv: a feedback page per graded submission and
a histogram of each assignment's scores.

Feedback pages are nbgrader's ``generate_feedback`` run on the graded notebooks kept in
``OUT/autograded/``, one run per assignment in a course folder of its own; unless the
instructor asks otherwise they leave out the hidden tests, and student HTML on them is
always cleaned (`autograde.feedback`). A page once written is kept: a run that is stopped
and started again writes only the missing ones.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from .grades import Row
from .options import GradeOptions
from .submission import SCORED
from .workspace import CourseFolder, run


def write_feedback(rows: Iterable[Row], options: GradeOptions, log: Callable[[str], None]) -> None:
    """``OUT/feedback/<student>/<assignment>/`` for every graded row that has none yet."""
    from .feedback import config_lines

    out = options.out
    todo: dict[str, list[str]] = {}
    for row in rows:
        page = out / "feedback" / row.student_id / row.assignment
        kept = out / "autograded" / row.student_id / row.assignment
        if row.status in SCORED and kept.is_dir() and not page.is_dir():
            todo.setdefault(row.assignment, []).append(row.student_id)
    for assignment, students in sorted(todo.items()):
        extra = config_lines(options.hide_hidden_tests)
        with CourseFolder(db_url=options.db_url, extra_config=extra) as course:
            course.add_source(assignment, options.solutions)
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
                if options.unsandboxed:
                    for page in made.glob("*.html"):
                        page.write_text(_with_banner(page.read_text(), UNSANDBOXED_BANNER))
                target = out / "feedback" / made.parent.name / assignment
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(made, target)


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

"""What can be wrong with a submission, before and after it runs.

Before: a notebook is compared with the release the student was given. A graded or answer
cell that is gone or appears twice, or a test cell whose source was edited, makes the
submission ungradable as handed in (nbgrader would quietly restore or skip those cells).
After: the executed notebook tells whether a limit stopped it (a cell timed out, memory
or processes ran out).
"""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter
from pathlib import Path

BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"  # nbgrader's
# Statuses of a grades.csv row. Any status but "ok" comes with a score of 0, except
# "library-answer": the points of the other exercises are kept.
STATUSES = {
    "ok": "graded",
    "missing": "no notebook was handed in",
    "invalid-notebook": "a notebook is not valid JSON or not a notebook",
    "invalid-student-id": "the student folder's name is not a usable id",
    "unknown-assignment": "no such assignment in the course",
    "missing-cell": "a graded or answer cell of the release is gone",
    "duplicated-cell": "a graded or answer cell appears more than once",
    "test-cell-changed": "a test cell's source differs from the release",
    "refused-file": "a link, a special file or a notebook over the size limit was handed in",
    "timeout": "a cell ran past the cell time limit, or the notebook past its own",
    "memory-limit": "the kernel ran out of its memory (address-space) limit",
    "process-limit": "the kernel hit its limit on processes and threads",
    "kernel-died": "the kernel died while the notebook ran (os._exit, a crash)",
    "output-limit": "a cell's output passed the output limit (the rest was not kept)",
    "environment-error": "a set-up cell of the release failed: the machine's fault, not a score",
    "library-answer": "an exercise answered with the course library's code: no points for it",
    "tampered": "checks the grader added did not behave: the kernel's test machinery was changed",
    "error": "grading failed for another reason: see the log",
}


MAX_NOTEBOOK_MB = 20  # a notebook larger than this is refused before it is parsed


class RefusedFile(ValueError):
    """A handed-in file the grader will not read: a link, a special file, too large."""


def read_handed_in(path: Path, max_mb: float = MAX_NOTEBOOK_MB) -> bytes:
    """The bytes of a handed-in file, read without following a link: a regular file of at
    most `max_mb` MB, or RefusedFile naming what it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        kind = "a symbolic link" if Path(path).is_symlink() else f"unreadable ({err.strerror})"
        raise RefusedFile(f"{Path(path).name} is {kind}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(f"{Path(path).name} is not a regular file")
        limit = int(max_mb * 2**20)
        data = fh.read(limit + 1)
        if len(data) > limit:
            raise RefusedFile(f"{Path(path).name} is larger than {max_mb:g} MB")
        return data


def folder_problem(folder: Path) -> str | None:
    """What makes a submission folder unsafe to read (a link to another folder, or a link
    or special file inside it); None when it holds only folders and regular files."""
    for path in (folder.parent, folder):
        if path.is_symlink():
            return f"{path.name}/ is a symbolic link"
    for entry in sorted(folder.rglob("*")):
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            return f"{entry.relative_to(folder)} is a symbolic link"
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return f"{entry.relative_to(folder)} is not a regular file"
    return None


SCORED = ("ok", "library-answer")  # statuses whose score is nbgrader's (feedback, plots)


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def graded_id(cell) -> str | None:
    """The nbgrader grade_id of a cell, None for a cell without one."""
    return _nbgrader(cell).get("grade_id")


def graded_cells(nb) -> dict[str, object]:
    """The release's cells that grading depends on: answer and test cells, by grade_id."""
    cells = {}
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("grade") or meta.get("solution"):
            cells[meta["grade_id"]] = cell
    return cells


def _source(cell) -> str:
    """A cell's source, hidden tests left out (an instructor's own notebook has them: it
    must pass as unchanged), compared line by line without trailing blanks."""
    text = cell.get("source", "")
    text = "".join(text) if isinstance(text, list) else text
    lines, hidden = [], False
    for line in text.strip().splitlines():
        if line.strip() == BEGIN_HIDDEN:
            hidden = True
        elif line.strip() == END_HIDDEN:
            hidden = False
        elif not hidden:
            lines.append(line.rstrip())
    return "\n".join(lines).strip()


def structure_problem(submitted, release) -> tuple[str, str] | None:
    """(status, note) if `submitted` lost, doubled or edited a cell of `release`; else None."""
    expected = graded_cells(release)
    counts = Counter(_nbgrader(cell).get("grade_id") for cell in submitted.cells)
    gone = [grade_id for grade_id in expected if counts[grade_id] == 0]
    if gone:
        return "missing-cell", f"cell(s) {', '.join(gone)} removed"
    twice = [grade_id for grade_id in expected if counts[grade_id] > 1]
    if twice:
        return "duplicated-cell", f"cell(s) {', '.join(twice)} appear more than once"
    by_id = {_nbgrader(cell).get("grade_id"): cell for cell in submitted.cells}
    for grade_id, cell in expected.items():
        meta = _nbgrader(cell)
        if meta.get("grade") and not meta.get("solution"):  # a test cell: read-only
            if _source(by_id[grade_id]) != _source(cell):
                return "test-cell-changed", f"test cell {grade_id} was edited"
    return None


def _error_status(ename: str, evalue: str) -> str | None:
    if ename == "CellTimeoutError":  # nbgrader's error for a cell past Execute.timeout
        return "timeout"
    if ename == "MemoryError":
        return "memory-limit"
    if ename == "OutputLimitExceeded":  # autograde.outputs.ENAME: the grader cut the output
        return "output-limit"
    if ename == "BlockingIOError" or "Resource temporarily unavailable" in evalue:
        return "process-limit"
    if "can't start new thread" in evalue:
        return "process-limit"
    return None


def limit_hit(executed) -> tuple[str, str] | None:
    """(status, note) if an executed notebook shows a cell stopped by a limit; else None."""
    for index, cell, output in errors(executed):
        status = _error_status(output.get("ename", ""), output.get("evalue", ""))
        if status:
            where = _nbgrader(cell).get("grade_id") or f"cell {index + 1}"
            return status, f"{where}: {output.get('ename')} {output.get('evalue', '')}"
    return None


# Errors that say the machine lacks something the release needs, wherever a locked cell
# of the release raises them.
_MISSING = ("ModuleNotFoundError", "ImportError")


def errors(executed) -> list[tuple[int, object, dict]]:
    """(index, cell, error output) of every error in an executed notebook, in order."""
    found = []
    for index, cell in enumerate(executed.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                found.append((index, cell, output))
    return found


def environment_problem(executed) -> tuple[str, str] | None:
    """("environment-error", note) when the first error of an executed notebook is in a
    locked, ungraded cell of the release before any answer cell (set-up, data: the student
    wrote nothing yet), or a locked cell could not import a module; else None."""
    first_answer = next(
        (i for i, cell in enumerate(executed.cells) if _nbgrader(cell).get("solution")),
        len(executed.cells),
    )
    for position, (index, cell, output) in enumerate(errors(executed)):
        meta = _nbgrader(cell)
        locked_setup = meta.get("locked") and not meta.get("grade") and not meta.get("solution")
        if locked_setup and (
            (position == 0 and index < first_answer) or output.get("ename") in _MISSING
        ):
            where = meta.get("grade_id") or f"cell {index + 1}"
            ename, evalue = output.get("ename", ""), output.get("evalue", "")
            return "environment-error", f"set-up cell {where}: {ename} {evalue}".strip()
    return None


# --- canaries: checks the grader adds after every test cell --------------------------------
# Hidden tests run in the student's own kernel: a cell that installs an input transformer,
# hides errors or patches the course's check helpers can make every test pass. After each
# graded test cell the grader adds checks whose outcome it knows, written like tests with
# numbers drawn for each submission and marked only in the cell metadata, which the
# kernel never sees. A kernel where one that must fail passes, or the one that must pass
# does not print its result, was tampered with. (Code written to tell these checks from
# the real tests could still get through: canaries catch the general tricks.)

CANARY_KEY = "twin_gpt_canary"  # cell metadata: "fail" or "pass" (and the expected print)


def _canaries(rng) -> list[tuple[str, str, str]]:
    """(must "fail" or "pass", source, what a passing one prints) for one test cell."""
    a, b, c = (rng.randint(2, 999) for _ in range(3))
    return [
        ("fail", f'assert {a} + {b} == {a + b + c}, "{a} + {b}"', ""),
        ("fail", f"_ = [{a}, {b}][{c}]", ""),
        ("fail", f"from course import checks\nchecks.assert_close({a}.0, {a + c}.0, atol=0.0)", ""),
        ("pass", f"print({a} * {b})", str(a * b)),
    ]


def add_canaries(nb, seed: int):
    """`nb` with canary cells after each graded test cell (a new notebook)."""
    import copy
    import random

    import nbformat

    rng = random.Random(seed)
    out = copy.deepcopy(nb)
    cells = []
    for cell in out.cells:
        cells.append(cell)
        meta = _nbgrader(cell)
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            for outcome, source, printed in _canaries(rng):
                canary = nbformat.v4.new_code_cell(source)
                canary.metadata[CANARY_KEY] = {"must": outcome, "prints": printed}
                canary.id = f"check-{seed % 10**6}-{len(cells)}"
                cells.append(canary)
    out.cells = cells
    return out


def canary_problem(executed) -> tuple[str, str] | None:
    """("tampered", note) when a canary of `add_canaries` did not behave; else None."""
    seen = 0
    for cell in executed.cells:
        want = cell.get("metadata", {}).get(CANARY_KEY)
        if not want:
            continue
        seen += 1
        outputs = cell.get("outputs", [])
        failed = any(o.get("output_type") == "error" for o in outputs)
        text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
        if want["must"] == "fail" and not failed:
            return (
                "tampered",
                "a check the grader added that must fail passed: tests could not fail",
            )
        if want["must"] == "pass" and (failed or want["prints"] not in text.split()):
            return "tampered", "a check the grader added that must pass did not"
    if seen == 0 and any(
        _nbgrader(c).get("grade") and not _nbgrader(c).get("solution") for c in executed.cells
    ):
        return "tampered", "the checks the grader added are gone"
    return None


def strip_canaries(executed):
    """`executed` without the canary cells, in place (what feedback shows); returns it."""
    executed.cells = [c for c in executed.cells if not c.get("metadata", {}).get(CANARY_KEY)]
    return executed


# --- answers taken from the library ----------------------------------------------------------
# The course library holds a reference for every exercise. An answer cell that uses an
# object of the library which the instructor's own answer to that exercise does not use
# (the reference itself, a class to subclass, a trainer to call) is the library's answer.
# Names are resolved through every import of the notebook (`from course import autograd as
# ag` makes `ag.matmul_backward` course.autograd.matmul_backward); a string naming a course
# module (for __import__ or importlib) counts too. The check helpers are always allowed.

ALWAYS_ALLOWED = ("course.checks", "course.runtime")


def _course_aliases(nb) -> dict[str, str]:
    """{name in the notebook: the course object it is bound to} from every import."""
    import ast

    aliases = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = _parse(_plain_source(cell))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "course":
                        if alias.asname:
                            aliases[alias.asname] = alias.name
                        else:
                            aliases["course"] = "course"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "course":
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


# CPython 3.11 counts the depth of the tree ast.parse builds in one place for all threads:
# two grading workers parsing at once can fail with "SystemError: AST constructor recursion
# depth mismatch" (seen here). One parse at a time in this process.
_PARSE_LOCK = threading.Lock()


def _parse(source: str):
    import ast

    with _PARSE_LOCK:
        return ast.parse(source)


def _plain_source(cell) -> str:
    """A code cell's source with IPython magics and shell lines blanked (not Python)."""
    lines = cell.source.split("\n")
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def course_references(source: str, aliases: dict[str, str]) -> set[str]:
    """The course objects a piece of code refers to, as dotted names."""
    import ast

    try:
        tree = _parse(source)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name):
            parts = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id in aliases:
                found.add(".".join([aliases[node.id], *reversed(parts)]))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "course":
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "course"}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == "course" or node.value.startswith("course."):
                found.add(node.value)
    return found


def _covered(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def library_answers(submitted, solution) -> dict[str, list[str]]:
    """{answer cell grade_id: the course objects it uses that the instructor's answer to
    the same exercise does not} for every answer cell of `submitted` that has some."""
    mine, theirs = _course_aliases(submitted), _course_aliases(solution)
    reference = {graded_id(c): c.source for c in solution.cells if _nbgrader(c).get("solution")}
    flagged = {}
    for cell in submitted.cells:
        grade_id = graded_id(cell)
        if cell.cell_type != "code" or grade_id not in reference:
            continue
        allowed = course_references(reference[grade_id], theirs)
        # The names the release imports stay resolvable (aliases can be shadowed, not used).
        used = course_references(_plain_source(cell), mine)
        allowed |= set(ALWAYS_ALLOWED)
        extra = sorted(
            n for n in used if not _covered(n, allowed) and n not in ("course",) + ALWAYS_ALLOWED
        )
        if extra:
            flagged[grade_id] = extra
    return flagged

"""grade (autograde/grade.py): a class's submissions graded in the sandbox, one row each; on a
toy assignment and on every chapter of the real course."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import REPO, TOY, TOY_SCRIPT, edit_cell, write_toy

from autograde.grade import FIELDS, LOCK_FILE, UNSANDBOXED_NOTE, grade, run_lock
from autograde.grades import read_grades

QUIET = {"log": lambda msg: None}


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and tuple(rows[0]) == FIELDS
    return {f"{r['student_id']}/{r['assignment']}": r for r in rows}


def _repo_snapshot() -> dict[str, float]:
    """Every file of the repository outside the venv and caches, with its mtime."""
    skip = {".venv", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis", "__pycache__"}
    return {
        str(p.relative_to(REPO)): p.stat().st_mtime
        for p in REPO.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(REPO).parts)
    }


def rows_notes(out: Path, student: str) -> str:
    with (out / "grades.csv").open() as fh:
        return next(r["notes"] for r in csv.DictReader(fh) if r["student_id"] == student)


# --- grade --------------------------------------------------------------------------------


def _submit(root: Path, student: str, notebook: Path, assignment: str = TOY) -> Path:
    dest = root / student / assignment / f"{assignment}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, dest)
    return dest


def test_grade_scores_every_submission_and_survives_bad_ones(toy_course, tmp_path):
    solutions, release_dir = toy_course
    source_nb = solutions / TOY / f"{TOY}.ipynb"
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs = tmp_path / "submissions"
    _submit(subs, "alice", source_nb)  # the solution: full marks
    _submit(subs, "bob", release_nb)  # untouched release: nothing
    broken = _submit(subs, "carol", release_nb)
    broken.write_text(broken.read_text()[:200])  # truncated JSON
    # dave answers `add`, then loops forever in `mul`: the cell timeout stops it, and the
    # row says so (a status other than ok scores 0).
    looping = edit_cell(release_nb, "add", "def add(a, b):\n    return a + b\n", subs / "x.ipynb")
    edit_cell(looping, "mul", "while True:\n    pass\n")
    _submit(subs, "dave", looping)
    # erin leaves the stubs and rewrites a test cell to pass: refused as handed in.
    tampered = edit_cell(release_nb, "test_add", "pass\n", subs / "y.ipynb")
    edit_cell(tampered, "test_mul", "pass\n")
    _submit(subs, "erin", tampered)
    (subs / "frank" / TOY).mkdir(parents=True)  # handed in nothing
    _submit(subs, "hank", release_nb).write_text("{}")  # JSON, but not a notebook
    # ivan's kernel dies in the middle: a status of its own, not a quiet zero.
    _submit(
        subs, "ivan", edit_cell(release_nb, "add", "import os\nos._exit(1)\n", subs / "z.ipynb")
    )
    _submit(subs, "gina", source_nb, assignment="42_unknown")
    _submit(subs, "bad id", source_nb)

    before = _repo_snapshot()
    out = tmp_path / "out"
    grade(subs, out, cell_timeout=5, timeout=120, solutions=solutions, **QUIET)
    assert _repo_snapshot() == before, "grading wrote into the repository"

    rows = _read_csv(out / "grades.csv")
    expect = {
        "alice": ("3.0", "ok"),
        "bob": ("0.0", "ok"),
        "carol": ("0.0", "invalid-notebook"),
        "dave": ("0.0", "timeout"),
        "erin": ("0.0", "test-cell-changed"),
        "frank": ("0.0", "missing"),
        "bad id": ("0.0", "invalid-student-id"),
        "hank": ("0.0", "invalid-notebook"),
        "ivan": ("0.0", "kernel-died"),
    }
    for student, (score, status) in expect.items():
        row = rows.pop(f"{student}/{TOY}")
        assert (row["score"], row["max_score"], row["status"]) == (score, "3.0", status), row
    assert rows.pop("gina/42_unknown")["status"] == "unknown-assignment"
    assert rows == {}
    feedback = out / "feedback" / "alice" / TOY / f"{TOY}.html"
    assert feedback.is_file() and "Score: 3.0 / 3.0" in feedback.read_text()
    assert "mul" in rows_notes(out, "dave") and "CellTimeoutError" in rows_notes(out, "dave")
    assert "not a readable notebook" in rows_notes(out, "carol")
    assert "test_add" in rows_notes(out, "erin")
    assert not (out / "feedback" / "carol").exists()


def test_grade_kills_a_submission_that_ignores_interrupts(toy_course, tmp_path, monkeypatch):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs = tmp_path / "submissions"
    stubborn = """
        import time
        while True:
            try:
                time.sleep(0.1)
            except KeyboardInterrupt:
                pass
    """
    edit_cell(release_nb, "add", stubborn, subs / "mallory" / TOY / f"{TOY}.ipynb")
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    out = tmp_path / "out"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the course folder goes here
    # The cell timeout is longer than the submission's: nbgrader and its kernel are killed.
    grade(subs, out, cell_timeout=600, timeout=40, solutions=solutions, **QUIET)
    leftovers = []
    for proc in psutil.process_iter():
        try:
            if proc.cwd().startswith(str(tmp_path)):
                leftovers.append(" ".join(proc.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    assert leftovers == [], f"processes left running: {leftovers}"
    rows = _read_csv(out / "grades.csv")
    assert rows[f"mallory/{TOY}"]["status"] == "timeout"
    assert rows[f"mallory/{TOY}"]["score"] == "0.0"
    assert (rows[f"alice/{TOY}"]["score"], rows[f"alice/{TOY}"]["status"]) == ("3.0", "ok")


def test_grade_refuses_to_write_into_the_repository(toy_course, tmp_path):
    solutions, _ = toy_course
    (tmp_path / "subs").mkdir()
    with pytest.raises(ValueError, match="inside the repository"):
        grade(tmp_path / "subs", REPO / "grades-out", solutions=solutions, **QUIET)
    assert not (REPO / "grades-out").exists()


def test_grade_cli_reports_a_missing_submissions_folder(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograde",
            "grade",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "submissions folder not found" in result.stderr and "nope" in result.stderr


# --- the real course ----------------------------------------------------------------------


def _graded_ids(nb: dict, kind: str) -> list[str]:
    """grade_ids of a notebook's answer cells ("solution") or test cells ("test")."""
    ids = []
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if kind == "solution" and meta.get("solution"):
            ids.append(meta["grade_id"])
        if kind == "test" and meta.get("grade") and not meta.get("solution"):
            ids.append(meta["grade_id"])
    return ids


def _broken_submissions(subs: Path, name: str, release_nb: Path) -> dict[str, str]:
    """Submissions of chapter `name` that must not be graded as handed in: student ->
    expected status. Each is caught before or early in the run, so every chapter gets them."""
    nb = json.loads(release_nb.read_text())
    first_answer, first_test = _graded_ids(nb, "solution")[0], _graded_ids(nb, "test")[0]
    folder = lambda student: subs / student / name  # noqa: E731
    expect = {}
    # Invalid JSON.
    dest = folder("truncated") / f"{name}.ipynb"
    dest.parent.mkdir(parents=True)
    dest.write_text(release_nb.read_text()[:500])
    expect["truncated"] = "invalid-notebook"
    # A graded test cell deleted; an answer cell copied; a test cell edited to pass.
    for student, status in (
        ("deleter", "missing-cell"),
        ("doubler", "duplicated-cell"),
        ("editor", "test-cell-changed"),
    ):
        changed = json.loads(release_nb.read_text())
        ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in changed["cells"]]
        if student == "deleter":
            del changed["cells"][ids.index(first_test)]
        elif student == "doubler":
            copy = json.loads(json.dumps(changed["cells"][ids.index(first_answer)]))
            copy["id"] = "copied-cell"
            changed["cells"].append(copy)
        else:
            changed["cells"][ids.index(first_test)]["source"] = "pass\n"
        dest = folder(student) / f"{name}.ipynb"
        dest.parent.mkdir(parents=True)
        dest.write_text(json.dumps(changed))
        expect[student] = status
    # The kernel dies in the first answer cell.
    edit_cell(
        release_nb, first_answer, "import os\nos._exit(3)\n", folder("quitter") / f"{name}.ipynb"
    )
    expect["quitter"] = "kernel-died"
    return expect


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_grade_gives_solutions_full_marks_and_refuses_broken_submissions(tmp_path):
    """Every chapter, graded in the sandbox: the solution scores full marks, and broken
    submissions end as rows with the status that names the problem.

    The release is not graded here: that would be a third run of every chapter. That it
    scores nothing is what the probe proves, exercise by exercise (each stub fails every
    test cell, hidden tests included, and the release's own test cells), and nbgrader's
    scoring of an untouched release is graded on the toy course above.
    """
    subs = tmp_path / "submissions"
    names = [p.name for p in sorted((REPO / "solutions").iterdir()) if p.is_dir()]
    assert names, "no assignments in solutions/"
    broken = {}
    for name in names:
        release_nb = REPO / "notebooks" / name / f"{name}.ipynb"
        _submit(subs, "solver", REPO / "solutions" / name / f"{name}.ipynb", assignment=name)
        broken[name] = _broken_submissions(subs, name, release_nb)
    out = tmp_path / "out"
    # The solvers' rows prove what the check of the solutions before a class proves (tested
    # on the toy course): checking them too would run every chapter a third time.
    grade(subs, out, workers=2, check_solutions=False, **QUIET)
    rows = _read_csv(out / "grades.csv")
    wrong = []
    for name in names:
        solver = rows.pop(f"solver/{name}")
        assert float(solver["max_score"]) > 0
        assert solver["status"] == "ok", f"{name}: {solver['status']}: {solver['notes']}"
        assert float(solver["score"]) == float(solver["max_score"]), solver
        html = out / "feedback" / "solver" / name / f"{name}.html"
        assert html.is_file()
        for student, status in broken[name].items():
            row = rows.pop(f"{student}/{name}")
            if (row["status"], row["score"]) != (status, "0.0"):
                wrong.append((name, student, status, row))
    assert wrong == [], wrong
    assert rows == {}, f"rows nobody submitted: {sorted(rows)}"


@pytest.mark.parametrize(
    ("log", "status"),
    [
        ("... DeadKernelError: Kernel died before replying ...", "kernel-died"),
        (
            "[ERROR] Timeout waiting for execute reply (120s).\n[ERROR] Interrupting kernel\n"
            "nbclient.exceptions.CellTimeoutError: A cell timed out ... Timeout waiting for "
            "IOPub output.",
            "timeout",
        ),
        ("[ERROR] There was an error processing assignment: alembic not found", "error"),
    ],
)
def test_an_ungraded_submission_is_named_from_nbgraders_log(log, status):
    from autograde.workers import failure

    assert failure(log)[0] == status


def test_links_special_files_and_huge_notebooks_are_refused_unread(toy_course, tmp_path):
    """A submission that is a link to the solution scored full marks once: the grader (root)
    followed it. Links, a folder linked in, a FIFO and an oversized notebook are refused."""
    solutions, release_dir = toy_course
    source_nb = solutions / TOY / f"{TOY}.ipynb"
    subs = tmp_path / "submissions"
    _submit(subs, "alice", source_nb)  # an honest copy of a full answer: still full marks
    linked = subs / "mallory" / TOY / f"{TOY}.ipynb"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(source_nb)  # the solution itself, by a link
    (subs / "oscar").mkdir()
    (subs / "oscar" / TOY).symlink_to(source_nb.parent)  # the solution's folder, linked in
    _submit(subs, "peggy", source_nb)
    (subs / "peggy" / TOY / "notes.txt").symlink_to("/etc/hostname")  # a link beside it
    fifo = subs / "trent" / TOY / f"{TOY}.ipynb"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # reading it would block the grader for ever
    huge = _submit(subs, "walter", release_dir / TOY / f"{TOY}.ipynb")
    nb = json.loads(huge.read_text())
    nb["metadata"]["padding"] = "x" * (21 * 2**20)  # valid JSON, over the 20 MB limit
    huge.write_text(json.dumps(nb))
    out = tmp_path / "out"
    grade(subs, out, cell_timeout=20, timeout=120, solutions=solutions, **QUIET)
    rows = _read_csv(out / "grades.csv")
    assert (rows[f"alice/{TOY}"]["score"], rows[f"alice/{TOY}"]["status"]) == ("3.0", "ok")
    for student, why in [("mallory", "symbolic link"), ("oscar", "symbolic link"),
                         ("peggy", "notes.txt is a symbolic link"), ("trent", "not a regular"),
                         ("walter", "larger than 20 MB")]:  # fmt: skip
        row = rows[f"{student}/{TOY}"]
        assert (row["score"], row["status"]) == ("0.0", "refused-file"), row
        assert why in row["notes"], row
    assert not (out / "feedback" / "mallory").exists()


def test_a_second_run_on_the_same_out_folder_is_refused(toy_course, tmp_path):
    solutions, _ = toy_course
    subs = tmp_path / "submissions"
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out):  # a first run, still grading
        with pytest.raises(RuntimeError, match=f"another grading run .pid {os.getpid()}"):
            grade(subs, out, solutions=solutions, **QUIET)
    assert not (out / "grades.csv").exists(), "the second run wrote grades.csv"
    (out / LOCK_FILE).unlink()
    (out / LOCK_FILE).symlink_to(tmp_path / "victim")  # planted: never followed
    with pytest.raises(OSError):
        grade(subs, out, solutions=solutions, **QUIET)
    assert not (tmp_path / "victim").exists()


def test_grading_without_a_sandbox_is_refused_unless_asked_and_then_recorded(
    toy_course, tmp_path, monkeypatch
):
    """Not as root (no separate user, nothing hidden), a kernel runs as the instructor: the
    grader says so first, refuses, and with --unsafe-no-sandbox marks every row and page."""
    import autograde.grade

    monkeypatch.setattr(
        autograde.grade,
        "isolation",
        lambda: {"separate_user": False, "hidden_folders": False, "no_network": True},
    )
    solutions, _ = toy_course
    subs = tmp_path / "submissions"
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    out, said = tmp_path / "out", []
    with pytest.raises(RuntimeError, match="--unsafe-no-sandbox"):
        grade(subs, out, solutions=solutions, log=said.append)
    assert said[0].startswith("sandbox for student kernels: separate user: NO")
    assert not (out / "grades.csv").exists()
    grade(subs, out, solutions=solutions, unsafe_no_sandbox=True, log=said.append)
    row = _read_csv(out / "grades.csv")[f"alice/{TOY}"]
    assert (row["score"], row["status"]) == ("3.0", "ok")
    assert UNSANDBOXED_NOTE in row["notes"]
    page = (out / "feedback" / "alice" / TOY / f"{TOY}.html").read_text()
    assert "Graded without a sandbox" in page and "Score: 3.0 / 3.0" in page


def _executed(cells: list[tuple[dict, dict | None]]):
    """A notebook of code cells, each (nbgrader metadata, error output or None)."""
    nb = nbformat.v4.new_notebook()
    for meta, error in cells:
        cell = nbformat.v4.new_code_cell("pass", metadata={"nbgrader": meta} if meta else {})
        cell.outputs = [nbformat.v4.new_output("error", **error)] if error else []
        nb.cells.append(cell)
    return nb


SETUP = {"grade_id": "data", "locked": True, "grade": False, "solution": False}
ANSWER = {"grade_id": "add", "locked": False, "grade": False, "solution": True}
DEMO = {"grade_id": "demo", "locked": True, "grade": False, "solution": False}
TEST = {"grade_id": "test_add", "locked": True, "grade": True, "solution": False}
MISSING = {"ename": "FileNotFoundError", "evalue": "tinyshakespeare.txt", "traceback": []}
STUB = {"ename": "NotImplementedError", "evalue": "", "traceback": []}
NO_MODULE = {"ename": "ModuleNotFoundError", "evalue": "No module named 'tiktoken'",
             "traceback": []}  # fmt: skip


def test_a_failing_set_up_cell_is_the_machines_fault_not_the_students():
    from autograde.submission import environment_problem

    status, note = environment_problem(_executed([(SETUP, MISSING), (ANSWER, None)]))
    assert status == "environment-error" and "data" in note and "FileNotFoundError" in note
    # A locked cell that fails because an answer raised first, or after the answers: the
    # student's stub, graded as usual.
    assert environment_problem(_executed([(SETUP, None), (ANSWER, STUB), (DEMO, STUB)])) is None
    assert environment_problem(_executed([(SETUP, None), (ANSWER, None), (DEMO, STUB),
                                          (TEST, STUB)])) is None  # fmt: skip
    # A library the release imports, missing on this machine, wherever the cell is.
    status, _ = environment_problem(_executed([(ANSWER, None), (DEMO, NO_MODULE)]))
    assert status == "environment-error"
    # A cell the student added (no nbgrader metadata) that fails is theirs.
    assert environment_problem(_executed([(None, MISSING), (ANSWER, None)])) is None


def test_no_student_is_graded_when_the_solution_fails_in_the_sandbox(tmp_path, monkeypatch):
    """A grading machine without the course data: the solution's data cell fails in the
    sandbox, so nothing is graded (not a class of zeros), with the reason."""
    from autograde.release import release

    needs_data = TOY_SCRIPT.replace(
        "SMOKE = True\n",
        "SMOKE = True\n\n"
        '# %% nbgrader={"grade": false, "grade_id": "data", "locked": true, '
        '"schema_version": 3, "solution": false, "task": false}\n'
        "import os\n\n"
        "DATA = os.environ['COURSE_DATA_DIR']  # the course data: set on a grading machine\n",
    )
    solutions = tmp_path / "solutions"
    write_toy(solutions, needs_data)
    release(solutions=solutions, release_dir=tmp_path / "notebooks", log=lambda msg: None)
    subs = tmp_path / "submissions"
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    out = tmp_path / "out"
    settings = dict(solutions=solutions, cell_timeout=30, preload=False, **QUIET)
    with pytest.raises(RuntimeError, match=r"solution of 99_toy.*set-up cell data: KeyError"):
        grade(subs, out, **settings)
    assert not read_grades(out / "grades.csv"), "a student was graded"
    # alice may have been graded while the solution was checked: nothing of it is kept.
    assert not (out / "autograded" / "alice").exists()
    assert not (out / "feedback" / "alice").exists()
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))  # the machine fixed: grading goes on
    grade(subs, out, **settings)
    rows = _read_csv(out / "grades.csv")
    assert list(rows) == [f"alice/{TOY}"], "the solutions' check left a row"
    assert (rows[f"alice/{TOY}"]["score"], rows[f"alice/{TOY}"]["status"]) == ("3.0", "ok")
    assert not (out / "autograded" / "_solution-check").exists()


def test_no_row_is_recorded_before_the_solution_passed(toy_course, tmp_path, monkeypatch):
    """Students are graded while the solution is checked (the cores would idle), but their
    rows are recorded only once it has earned full marks."""
    from autograde import workers

    solutions, _ = toy_course
    subs = tmp_path / "submissions"
    for student in ("amy", "ben"):
        _submit(subs, student, solutions / TOY / f"{TOY}.ipynb")
    said: list[str] = []
    check, grade_one = workers.solution_problem, workers.Worker.grade

    def slow_check(row, out):
        time.sleep(8)  # the students' grading ends before the check does
        return check(row, out)

    def noted_grade(self, student, assignment, folder):
        row = grade_one(self, student, assignment, folder)
        said.append(f"graded {student}")
        return row

    monkeypatch.setattr(workers, "solution_problem", slow_check)
    monkeypatch.setattr(workers.Worker, "grade", noted_grade)
    grade(subs, tmp_path / "out", workers=3, cell_timeout=30, solutions=solutions,
          preload=False, log=said.append)  # fmt: skip
    passed = said.index(f"{TOY}: the solution earns full marks in the sandbox")
    students = ("amy", "ben")
    graded = [said.index(f"graded {s}") for s in students]
    rows = [said.index(f"{s}/{TOY}: ok, 3/3") for s in students]
    assert max(graded) < passed, f"not graded during the check, this proves nothing: {said}"
    assert min(rows) > passed, f"a row recorded before the solution passed: {said}"


TAMPERING = {
    # Every later cell (the hidden tests too) becomes `pass`.
    "transformer": "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])\n",
    # Every assert statement of every later cell is taken out before it runs.
    "unasserter": (
        "import ast\n\n\n"
        "class NoAsserts(ast.NodeTransformer):\n"
        "    def visit_Assert(self, node):\n"
        "        return ast.Pass()\n\n\n"
        "get_ipython().ast_transformers.append(NoAsserts())\n"
    ),
}


def _tamper(release_nb: Path, dest: Path, trick: str) -> Path:
    """The release, stubs left as they are, with `trick` run in the first answer cell."""
    return edit_cell(release_nb, "add", trick + "def add(a, b):\n    raise NotImplementedError\n",
                     dest)  # fmt: skip


def test_a_kernel_whose_tests_cannot_fail_is_caught_by_the_grader_s_checks(
    toy_course, tmp_path, monkeypatch
):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs = tmp_path / "submissions"
    for student, trick in TAMPERING.items():
        _tamper(release_nb, subs / student / TOY / f"{TOY}.ipynb", trick)
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    settings = dict(solutions=solutions, cell_timeout=30, preload=False, **QUIET)
    # Without the checks, both tricks score full marks on stubs: the attack works.
    import autograde.submission

    with monkeypatch.context() as patched:
        patched.setattr(autograde.submission, "add_canaries", lambda nb, seed: nb)
        patched.setattr(autograde.submission, "canary_problem", lambda nb: None)
        grade(subs, tmp_path / "unchecked", **settings)
    rows = _read_csv(tmp_path / "unchecked" / "grades.csv")
    assert {s: rows[f"{s}/{TOY}"]["score"] for s in TAMPERING} == dict.fromkeys(TAMPERING, "3.0")
    # With them: no points, and the status says why.
    grade(subs, tmp_path / "out", **settings)
    rows = _read_csv(tmp_path / "out" / "grades.csv")
    for student in TAMPERING:
        row = rows[f"{student}/{TOY}"]
        assert (row["score"], row["status"]) == ("0.0", "tampered"), row
    assert (rows[f"alice/{TOY}"]["score"], rows[f"alice/{TOY}"]["status"]) == ("3.0", "ok")
    page = (tmp_path / "out" / "feedback" / "alice" / TOY / f"{TOY}.html").read_text()
    kept = json.loads(
        (tmp_path / "out" / "autograded" / "alice" / TOY / f"{TOY}.ipynb").read_text()
    )
    assert not any("twin_gpt_canary" in c["metadata"] for c in kept["cells"])
    assert "checks.assert_close" not in page, "the grader's checks show on the feedback page"


BORROWED = {
    "borrower": "from course.autograd import Value\n\n\n"
    "def mul(a, b):\n    return (Value(a) * Value(b)).data\n",
    "smuggler": "import importlib\n\n_ag = importlib.import_module('course' + '.autograd')\n"
    "_name = 'course.autograd'\n\n\n"
    "def mul(a, b):\n    return (_ag.Value(a) * _ag.Value(b)).data\n",
}


def test_an_exercise_answered_with_the_library_earns_nothing(toy_course, tmp_path):
    """The course library holds a reference for every exercise; an answer that uses it
    loses that exercise's points (and only those), unless the instructor allows it."""
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs = tmp_path / "submissions"
    for student, answer in BORROWED.items():
        dest = subs / student / TOY / f"{TOY}.ipynb"
        edit_cell(release_nb, "add", "def add(a, b):\n    return a + b\n", dest)
        edit_cell(dest, "mul", answer)
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    settings = dict(solutions=solutions, cell_timeout=30, preload=False, **QUIET)
    grade(subs, tmp_path / "out", **settings)
    rows = _read_csv(tmp_path / "out" / "grades.csv")
    for student in BORROWED:
        row = rows[f"{student}/{TOY}"]
        assert (row["score"], row["status"]) == ("1.0", "library-answer"), row  # add's point
        assert "mul uses course.autograd" in row["notes"], row
    assert (rows[f"alice/{TOY}"]["score"], rows[f"alice/{TOY}"]["status"]) == ("3.0", "ok")
    assert (tmp_path / "out" / "feedback" / "borrower" / TOY / f"{TOY}.html").is_file()
    grade(subs, tmp_path / "self-paced", allow_library_answers=True, **settings)
    rows = _read_csv(tmp_path / "self-paced" / "grades.csv")
    assert {rows[f"{s}/{TOY}"]["score"] for s in BORROWED} == {"3.0"}

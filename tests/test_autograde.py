"""The nbgrader loop: release, check and grade, on a toy assignment and on the real course."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import REPO, TOY, edit_cell, write_toy

from autograde import notebooks
from autograde.grade import FIELDS, grade
from autograde.release import check, release

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


# --- release ------------------------------------------------------------------------------


def test_release_strips_solutions_and_hidden_tests(toy_course):
    solutions, release_dir = toy_course
    released = release_dir / TOY / f"{TOY}.ipynb"
    assert sorted(p.name for p in (release_dir / TOY).iterdir()) == [f"{TOY}.ipynb"]
    text = released.read_text()
    for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "return a + b", "mul(-2, 4)"):
        assert marker not in text, f"{marker!r} leaked into the release"
    assert "raise NotImplementedError()" in text
    assert "add(2, 3) == 5" in text  # visible tests stay


def test_release_is_idempotent(toy_course):
    solutions, release_dir = toy_course
    before = (release_dir / TOY / f"{TOY}.ipynb").read_bytes()
    assert release(solutions=solutions, release_dir=release_dir, **QUIET) == []
    assert (release_dir / TOY / f"{TOY}.ipynb").read_bytes() == before


def test_release_removes_assignments_gone_from_solutions(toy_course, tmp_path):
    solutions, release_dir = toy_course
    stale = release_dir / "98_gone"
    stale.mkdir()
    (stale / "98_gone.ipynb").write_text("{}")
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    assert not stale.exists()


# --- check --------------------------------------------------------------------------------


def test_check_passes_on_a_good_course(toy_course):
    solutions, release_dir = toy_course
    report = check(solutions=solutions, release_dir=release_dir, **QUIET)
    assert report.ok, report.problems


def test_check_flags_a_hand_edited_release(toy_course):
    solutions, release_dir = toy_course
    edit_cell(release_dir / TOY / f"{TOY}.ipynb", "add", "def add(a, b):\n    return 0\n")
    report = check(solutions=solutions, release_dir=release_dir, execute=False, **QUIET)
    assert any("differs from a fresh release" in p for p in report.problems), report.problems


def test_check_flags_a_stale_solution_notebook(toy_course):
    solutions, release_dir = toy_course
    script = solutions / TOY / f"{TOY}.py"
    script.write_text(script.read_text().replace("return a * b", "return b * a"))
    report = check(solutions=solutions, release_dir=release_dir, execute=False, **QUIET)
    assert any(f"differs from {TOY}.py" in p for p in report.problems), report.problems


def test_check_flags_a_solution_that_fails_its_tests(tmp_path):
    solutions, release_dir = tmp_path / "solutions", tmp_path / "notebooks"
    from conftest import TOY_SCRIPT

    write_toy(solutions, TOY_SCRIPT.replace("return a * b", "return a + b"))
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    report = check(solutions=solutions, release_dir=release_dir, **QUIET)
    failed = [p for p in report.problems if "cell failed" in p]
    assert len(failed) == 1 and "mul(2, 3) should be 6" in failed[0], report.problems


def test_check_flags_a_test_that_passes_on_the_stub(tmp_path):
    solutions, release_dir = tmp_path / "solutions", tmp_path / "notebooks"
    from conftest import TOY_SCRIPT

    toothless = TOY_SCRIPT.replace('assert add(2, 3) == 5, "add(2, 3) should be 5"', "add")
    write_toy(solutions, toothless)
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    report = check(solutions=solutions, release_dir=release_dir, **QUIET)
    passing = [p for p in report.problems if "passes on the stub" in p]
    assert len(passing) == 1, report.problems


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


def test_check_passes_on_the_repository():
    """notebooks/ is what a fresh release of solutions/ gives, and every pair is in sync.

    `check`'s executions (each solution passes its tests, no graded test passes on a stub)
    are what the probe of tests/test_chapters.py proves on the same notebooks in its one
    run of each chapter, so here `check` compares files only; its execution path is
    tested on the toy course above.
    """
    result = subprocess.run(
        [sys.executable, "-m", "autograde", "check", "--no-execute"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "check passed" in result.stdout


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
    grade(subs, out, workers=2, **QUIET)
    rows = _read_csv(out / "grades.csv")
    wrong = []
    for name in names:
        solver = rows.pop(f"solver/{name}")
        assert float(solver["max_score"]) > 0
        assert solver["status"] == "ok", solver
        assert float(solver["score"]) == float(solver["max_score"]), solver
        html = out / "feedback" / "solver" / name / f"{name}.html"
        assert html.is_file()
        for student, status in broken[name].items():
            row = rows.pop(f"{student}/{name}")
            if (row["status"], row["score"]) != (status, "0.0"):
                wrong.append((name, student, status, row))
    assert wrong == [], wrong
    assert rows == {}, f"rows nobody submitted: {sorted(rows)}"


def test_committed_notebooks_are_canonical():
    for path in sorted((REPO / "solutions").glob("*/*.ipynb")) + sorted(
        (REPO / "notebooks").glob("*/*.ipynb")
    ):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path
        assert path.read_text() == notebooks.dumps(notebooks.read(path)), path
    assert not list((REPO / "notebooks").rglob("*.py")), "a .py file in notebooks/ leaks code"


# --- probe --------------------------------------------------------------------------------


def test_probe_catches_tests_that_cannot_fail(toy_course):
    from autograde.probe import ReferenceAnswer, WrongAnswer, probe

    solutions, release_dir = toy_course
    wrong = [
        WrongAnswer("add", "subtracts", "def add(a, b):\n    return a - b\n"),
        # Not wrong at all: the probe must report that the tests pass on it.
        WrongAnswer("mul", "actually right", "def mul(a, b):\n    return b * a\n"),
        WrongAnswer("mul", "does not parse", "def mul(a, b) return 0\n"),
    ]
    references = [
        ReferenceAnswer("add", "library", "def add(a, b):\n    return b + a\n"),
        ReferenceAnswer("mul", "a broken library", "def mul(a, b):\n    return a + b\n"),
    ]
    report = probe(
        solutions / TOY / f"{TOY}.ipynb",
        release_dir / TOY / f"{TOY}.ipynb",
        wrong,
        references=references,
    )
    assert report.solution_failures == {}
    assert report.passed_wrongly == {("mul", "actually right"): ["test_mul"]}
    assert report.rejected_references == {("mul", "a broken library"): ["test_mul"]}
    assert ("add", "library") in report.tried
    assert list(report.broken_variants) == [("mul", "does not parse")]
    assert ("add", "stub") in report.tried and ("add", "subtracts") in report.tried
    assert report.not_restored == {}


def test_probe_reports_a_failing_solution(tmp_path):
    from conftest import TOY_SCRIPT

    from autograde.probe import probe

    solutions, release_dir = tmp_path / "solutions", tmp_path / "notebooks"
    write_toy(solutions, TOY_SCRIPT.replace("return a * b", "return a + b"))
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    report = probe(solutions / TOY / f"{TOY}.ipynb", release_dir / TOY / f"{TOY}.ipynb", [])
    assert list(report.solution_failures) == ["test_mul"]
    assert "mul(2, 3) should be 6" in report.solution_failures["test_mul"]


def test_probe_catches_a_released_test_that_passes_on_the_stub(tmp_path):
    """A test cell whose only real check is hidden: on the stub, the solution's cell fails
    (its hidden assert calls the stub), but the cell the learner sees passes."""
    from conftest import TOY_SCRIPT

    from autograde.probe import probe

    solutions, release_dir = tmp_path / "solutions", tmp_path / "notebooks"
    toothless = TOY_SCRIPT.replace('assert add(2, 3) == 5, "add(2, 3) should be 5"', "add")
    write_toy(solutions, toothless)
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    report = probe(solutions / TOY / f"{TOY}.ipynb", release_dir / TOY / f"{TOY}.ipynb", [])
    assert report.solution_failures == {}
    assert report.passed_wrongly == {("add", "stub"): ["test_add (as released)"]}


def test_probe_runs_setup_and_teardown_around_the_solution(toy_course):
    from autograde.probe import probe

    solutions, release_dir = toy_course
    paths = solutions / TOY / f"{TOY}.ipynb", release_dir / TOY / f"{TOY}.ipynb"
    # The teardown sees what the setup and the notebook left in the kernel.
    watched = probe(
        *paths,
        [],
        setup="calls = []\n",
        teardown="calls.append(add(1, 1))\nassert calls == [2] and SMOKE is True, calls\n",
    )
    assert watched.solution_failures == {}
    assert ("mul", "stub") in watched.tried
    complaining = probe(*paths, [], teardown="raise AssertionError('2 tensors on the CPU')\n")
    assert list(complaining.solution_failures) == ["probe teardown"]
    assert "2 tensors on the CPU" in complaining.solution_failures["probe teardown"]
    assert complaining.tried == [], "no variant is tried after a failed solution run"
    broken_setup = probe(*paths, [], setup="import no_such_module_here\n")
    assert list(broken_setup.solution_failures) == ["probe setup"]

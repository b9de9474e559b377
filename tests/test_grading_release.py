"""release and check (autograde/release.py): notebooks/ generated from solutions/, and proven
to be; on a toy assignment and on the real course."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, TOY, edit_cell, write_toy

from autograde import notebooks
from autograde.release import check, release

QUIET = {"log": lambda msg: None}


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

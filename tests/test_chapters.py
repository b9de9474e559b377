"""Every chapter: conventions, and graded cells that fail on stubs and wrong answers.

For each assignment in solutions/, ``tests/chapters/ch<assignment>.py`` lists plausible
wrong answers. The probe runs the solution notebook in smoke mode (every cell must run and
every graded test pass), then proves each exercise's test cells fail on the release stub
(the release's own test cells too) and on each wrong answer, and pass again once the
solution is restored. This is the first of the two runs of each chapter in the suite; the
second grades the solution in the sandbox (tests/test_grading_grade.py).
"""

from __future__ import annotations

import importlib
import re
import warnings

import pytest
from conftest import REPO

from autograde import notebooks
from autograde.probe import probe
from autograde.workspace import assignments

ASSIGNMENTS = assignments(REPO / "solutions")
MIN_WRONG_ANSWERS = 2  # per exercise, besides the stub

# Chapters whose tests/chapters module sets CHECK_DEVICES = True run under the device
# checker (course.torch.devices): every tensor that meets the model must follow its device,
# as a GPU would demand, proven here on the CPU. Uninstalled before the wrong answers run.
DEVICE_CHECK_SETUP = """\
from course.torch.devices import check_device_following
_device_checker = check_device_following()
"""
DEVICE_CHECK_TEARDOWN = """\
_device_checker.uninstall()
_device_checker.raise_if_violations()
"""


def test_there_are_chapters():
    assert "00_setup" in ASSIGNMENTS


def _solution(name):
    return notebooks.read(REPO / "solutions" / name / f"{name}.ipynb")


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_first_cells_are_setup_then_parameters(name):
    cells = _solution(name).cells
    setup, params = cells[0], cells[1]
    assert setup.cell_type == "code" and 'find_spec("course")' in setup.source, (
        "cell 1 must install the course library where it is missing (Colab)"
    )
    assert "print(" in setup.source, "cell 1 prints the versions"
    assert params.cell_type == "code" and "parameters" in params.metadata.get("tags", [])
    assert re.search(r"^SMOKE = ", params.source, re.M), "the parameters cell sets SMOKE"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_exercise_has_visible_and_hidden_tests(name):
    nb = _solution(name)
    by_id = {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if "nbgrader" in c.metadata}
    exercises = notebooks.exercises(nb)
    assert exercises, f"{name} has no exercise"
    for exercise, tests in exercises.items():
        assert "### BEGIN SOLUTION" in by_id[exercise].source, exercise
        assert tests, f"exercise {exercise} has no graded test cell after it"
        for test in tests:
            source, meta = by_id[test].source, by_id[test].metadata["nbgrader"]
            visible, _, hidden = source.partition("### BEGIN HIDDEN TESTS")
            assert meta.get("points", 0) > 0, f"{test} is worth no points"
            assert "assert" in visible, f"{test} has no visible check"
            assert hidden.strip(), f"{test} has no hidden tests"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", ASSIGNMENTS[::-1])  # the later, longer chapters first
def test_graded_cells_fail_on_stubs_and_wrong_answers(name):
    try:
        chapter = importlib.import_module(f"chapters.ch{name}")
    except ModuleNotFoundError:
        pytest.fail(f"write tests/chapters/ch{name}.py with WRONG_ANSWERS for {name}")
    solution = REPO / "solutions" / name / f"{name}.ipynb"
    exercises = notebooks.exercises(notebooks.read(solution))
    for exercise in exercises:
        count = sum(w.exercise == exercise for w in chapter.WRONG_ANSWERS)
        assert count >= MIN_WRONG_ANSWERS, f"{exercise}: {count} wrong answers listed"

    references = getattr(chapter, "REFERENCE_ANSWERS", [])
    release = REPO / "notebooks" / name / f"{name}.ipynb"
    check_devices = getattr(chapter, "CHECK_DEVICES", False)
    report = probe(
        solution,
        release,
        chapter.WRONG_ANSWERS,
        references=references,
        setup=DEVICE_CHECK_SETUP if check_devices else None,
        teardown=DEVICE_CHECK_TEARDOWN if check_devices else None,
    )

    # The grader gives a cell 120 s: a solution cell near that in smoke mode is a timeout
    # waiting for a slower machine. Said as a warning, in CI's summary, with the slowest runs.
    spent = sum(seconds for _, seconds in report.seconds)
    slow = [(label, s) for label, s in report.seconds if s > 60 and "/" not in label]
    if slow or spent > 300:
        slowest = "; ".join(f"{label} {s:.0f} s" for label, s in report.slowest())
        warnings.warn(f"{name}: {spent:.0f} s of cells in the probe; slowest: {slowest}",
                      stacklevel=1)  # fmt: skip
    assert report.solution_failures == {}, "the solution notebook fails in smoke mode"
    assert report.broken_variants == {}, "a wrong answer does not even run"
    assert report.passed_wrongly == {}, "graded tests pass on a stub or a wrong answer"
    assert report.rejected_references == {}, "graded tests fail on the library's reference"
    assert report.not_restored == {}, "tests fail again after restoring the solution"
    tried = set(report.tried)
    assert {(e, "stub") for e in exercises} <= tried
    assert {(w.exercise, w.name) for w in [*chapter.WRONG_ANSWERS, *references]} <= tried

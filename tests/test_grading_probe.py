"""probe (autograde/probe.py): graded test cells proven to fail on stubs and wrong answers."""

from __future__ import annotations

from conftest import TOY, write_toy

from autograde.release import release

QUIET = {"log": lambda msg: None}


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
    # what each run took, named: the solution's cells, then each variant's
    labels = [label for label, _ in report.seconds]
    assert {"add", "test_add", "mul", "test_mul"} <= set(labels)
    assert labels.index("test_add") < labels.index("add / subtracts: test_add")
    assert "add / library: test_add" in labels and "mul / restored: test_mul" in labels
    assert all(seconds >= 0 for _, seconds in report.seconds)
    assert report.slowest(2) == sorted(report.seconds, key=lambda item: -item[1])[:2]


def test_probe_reports_a_failing_solution(tmp_path):
    from conftest import TOY_SCRIPT

    from autograde.probe import probe

    solutions, release_dir = tmp_path / "solutions", tmp_path / "notebooks"
    write_toy(solutions, TOY_SCRIPT.replace("return a * b", "return a + b"))
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    report = probe(solutions / TOY / f"{TOY}.ipynb", release_dir / TOY / f"{TOY}.ipynb", [])
    assert list(report.solution_failures) == ["test_mul"]
    assert "mul(2, 3) should be 6" in report.solution_failures["test_mul"]


def test_probe_fails_a_solution_whose_test_cell_writes_to_stderr(tmp_path):
    """nbgrader scores a test cell that wrote anything to stderr 0, even when it raised
    nothing (a library's warning is enough): the probe must see what the grader sees."""
    from conftest import TOY_SCRIPT

    from autograde.probe import probe

    solutions, release_dir = tmp_path / "solutions", tmp_path / "notebooks"
    noisy = TOY_SCRIPT.replace(
        'assert mul(2, 3) == 6, "mul(2, 3) should be 6"',
        'import sys\nprint("a library warns", file=sys.stderr)\n'
        'assert mul(2, 3) == 6, "mul(2, 3) should be 6"',
    )
    assert noisy != TOY_SCRIPT
    write_toy(solutions, noisy)
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    report = probe(solutions / TOY / f"{TOY}.ipynb", release_dir / TOY / f"{TOY}.ipynb", [])
    assert list(report.solution_failures) == ["test_mul"]
    assert "stderr" in report.solution_failures["test_mul"]
    assert "a library warns" in report.solution_failures["test_mul"]


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


def test_probe_runs_a_chapter_that_updates_a_display_later(tmp_path):
    """A live plot: a display made in one cell, updated from a later one, after a cell
    that printed nothing. Each run keeps its own cell, so the update finds its display."""
    from conftest import TOY_SCRIPT

    from autograde.probe import probe

    live = TOY_SCRIPT.replace(
        '# %% nbgrader={"grade": false, "grade_id": "add"',
        "# %%\nfrom IPython.display import display\n\n"
        "handle = display('start', display_id=True)\n\n"
        "# %%\nquiet = 1\n\n# %%\nhandle.update('end')\n\n"
        '# %% nbgrader={"grade": false, "grade_id": "add"',
        1,
    )
    assert live != TOY_SCRIPT
    solutions, release_dir = tmp_path / "solutions", tmp_path / "notebooks"
    write_toy(solutions, live)
    release(solutions=solutions, release_dir=release_dir, **QUIET)
    report = probe(solutions / TOY / f"{TOY}.ipynb", release_dir / TOY / f"{TOY}.ipynb", [])
    assert report.solution_failures == {}
    assert ("add", "stub") in report.tried and report.passed_wrongly == {}

"""Every library module has tests, in a file named after it.

The rule, so a newcomer finds a module's tests by its name (and never mistakes the grader's
tests for the autograd engine's):

    course/<m>.py        tests/test_<m>.py          (course/autograd.py: test_autograd.py)
    course/torch/<m>.py  tests/test_torch_<m>.py
    course/tf/<m>.py     tests/test_tf_<m>.py
    autograde/<m>.py     tests/test_grading_<m>.py  (the grader: never test_autograde*)
    kernels/<m>.py       tests/test_kernels_<m>.py

Modules whose tests live in a file of another name are listed in ELSEWHERE with that file
and the reason. A new module must follow the rule or be listed; an entry whose module
gained a file of its own, or whose module is gone, must be removed.
"""

from __future__ import annotations

from pathlib import Path

from conftest import REPO

TESTS = REPO / "tests"
RULES = {
    "course": "test_{}.py",
    "course/torch": "test_torch_{}.py",
    "course/tf": "test_tf_{}.py",
    "autograde": "test_grading_{}.py",
    "kernels": "test_kernels_{}.py",
}

# module -> (the test file that holds its tests, why there)
ELSEWHERE = {
    "course/sample.py": ("test_train.py", "the sampling CLI reads the runs the CLI trains"),
    "course/torch/data.py": ("test_batches.py", "numpy, torch and tf batches, checked equal"),
    "course/tf/data.py": ("test_batches.py", "numpy, torch and tf batches, checked equal"),
    "course/torch/sampling.py": ("test_torch_model.py", "generation with and without cache"),
    "course/tf/convert.py": ("test_tf_model.py", "weights moved both ways, logits compared"),
    "course/torch/flash.py": ("test_flash.py", "both mirrors against one float64 reference"),
    "course/torch/launch.py": (
        "test_torch_distributed.py",
        "launching is tested with the distributed workers it runs",
    ),
    "course/tf/flash.py": ("test_flash.py", "both mirrors against one float64 reference"),
    "autograde/forkprotocol.py": ("test_grading_forkserver.py", "the launcher's side of it"),
    "autograde/nbgrader_config.py": ("test_grading_feedback.py", "nbgrader's settings"),
    "autograde/nbgrader_app.py": ("test_grading_startup.py", "nbgrader run by the grader"),
    "autograde/notebooks.py": ("test_grading_release.py", "pairs, canonical form"),
    "autograde/options.py": ("test_grading_sandbox.py", "bad options refused"),
    "autograde/report.py": ("test_grading_sandbox.py", "feedback pages and the score plot"),
    "autograde/runner.py": ("test_grading_sandbox.py", "one nbgrader process per worker"),
    "autograde/submission.py": ("test_grading_grade.py", "every status a row can end with"),
    "autograde/view.py": ("test_grading_sandbox.py", "what a kernel sees, tried by kernels"),
    "autograde/workers.py": ("test_grading_class.py", "a class graded by parallel workers"),
    "autograde/workspace.py": ("test_grading_release.py", "the throw-away course folder"),
}


def _modules() -> list[str]:
    return sorted(
        f"{folder}/{path.name}"
        for folder in RULES
        for path in (REPO / folder).glob("*.py")
        if not path.name.startswith("_")
    )


def _named_file(module: str) -> Path:
    folder, _, name = module.rpartition("/")
    return TESTS / RULES[folder].format(name.removesuffix(".py"))


def test_every_module_has_a_test_file_named_after_it_or_listed():
    missing = [
        f"{module}: write tests/{_named_file(module).name}"
        for module in _modules()
        if not _named_file(module).is_file() and module not in ELSEWHERE
    ]
    assert missing == [], missing


def test_the_list_of_exceptions_is_current():
    modules = set(_modules())
    for module, (test_file, _why) in ELSEWHERE.items():
        assert module in modules, f"{module} is gone: remove it from ELSEWHERE"
        assert not _named_file(module).is_file(), (
            f"{module} has {_named_file(module).name} now: remove it from ELSEWHERE"
        )
        assert (TESTS / test_file).is_file(), f"{module}: {test_file} does not exist"


def test_the_graders_tests_are_not_named_like_the_autograd_engines():
    confusing = sorted(p.name for p in TESTS.glob("test_autograde*.py"))
    assert confusing == [], f"name the grader's tests test_grading_*: {confusing}"

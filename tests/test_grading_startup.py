"""autograde/startup.py: grading processes skip two start-up costs and answer the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

IRIS = [
    "http://example.com/café",
    "https://例え.テスト/パス?q=1#frag",
    "mailto:someone@example.org",
    "not an iri",
    "http://[::1",
    "",
    "relative/path",
]

CHECK_IRIS = f"""
import json, sys, time
started = time.process_time()
PRELUDE
import nbformat, jsonschema
import_cpu = time.process_time() - started
built_at_import = "rfc3987_syntax.syntax_helpers" in sys.modules
checker = jsonschema.FormatChecker()
answers = [[checker.conforms(s, "iri"), checker.conforms(s, "iri-reference")] for s in {IRIS!r}]
print(json.dumps({{"built_at_import": built_at_import, "answers": answers,
                   "import_cpu": import_cpu}}))
"""


def _run(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_grading_process_reads_notebooks_without_building_the_iri_grammar_and_answers_the_same():
    pytest.importorskip("rfc3987_syntax")
    plain = _run(CHECK_IRIS.replace("PRELUDE", ""))
    graded = _run(
        CHECK_IRIS.replace("PRELUDE", "from autograde import startup; startup.defer_iri_grammar()")
    )
    assert plain["built_at_import"] and not graded["built_at_import"]
    # The IRI formats still checked, with the same answers (the grammar built when asked).
    assert graded["answers"] == plain["answers"]
    assert [a for a, _ in plain["answers"]] == [True, True, True, False, False, False, False]
    # A student's kernel gets no stand-in: the modules that start kernels leave it alone.
    kernel_side = _run(
        CHECK_IRIS.replace("PRELUDE", "import autograde.sandbox, autograde.forkserver")
    )
    assert kernel_side["built_at_import"]
    print(f"CPU to import nbformat: {plain['import_cpu']:.2f} s, {graded['import_cpu']:.2f} s")


def test_the_gradebook_version_read_in_process_is_the_one_alembic_prints():
    from autograde.startup import alembic_head

    # nbgrader's own way: the `alembic heads` command, found on PATH beside this Python.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", "from nbgrader.api import get_alembic_version as v; print(v())"],
        capture_output=True, text=True, timeout=300, env=env, check=True,
    )  # fmt: skip
    assert alembic_head() == done.stdout.strip() != ""


def test_nbgrader_run_by_the_grader_stamps_a_new_gradebook_with_the_head_version(toy_course):
    import sqlite3

    from autograde.startup import alembic_head
    from autograde.workspace import CourseFolder

    solutions, _ = toy_course
    with CourseFolder() as course:
        course.add_source("99_toy", solutions)
        released = course.generate("99_toy")  # the first nbgrader run makes the gradebook
        assert (released / "99_toy.ipynb").is_file()
        with sqlite3.connect(course.db_path) as db:
            (version,) = db.execute("select version_num from alembic_version").fetchone()
    assert version == alembic_head()

"""Feedback pages without hidden test source: the preprocessor, and nbgrader running it."""

from __future__ import annotations

import copy
import html
import re

import nbformat
from conftest import TOY, edit_cell
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from traitlets.config import Config

from autograde.feedback import TRACEBACK_NOTE, HideHiddenTests, config_lines
from autograde.workspace import CourseFolder, run

VISIBLE = 'assert mul(2, 3) == 6, "mul(2, 3) should be 6"'
TEST_SOURCE = f"""{VISIBLE}
### BEGIN HIDDEN TESTS
assert mul(-2, 4) == -8
assert mul(0, 9) == 0
### END HIDDEN TESTS
print("done")"""
# What IPython prints for a failing hidden assert: the cell's lines, hidden ones included.
TRACEBACK = [
    "\x1b[31m-----------------------------------------------------------------\x1b[39m",
    "\x1b[31mAssertionError\x1b[39m          Traceback (most recent call last)",
    "Cell In[5], line 3\n      1 " + VISIBLE + "\n      2 ### BEGIN HIDDEN TESTS\n"
    "----> 3 \x1b[38;5;28;01massert\x1b[39;00m mul(-2, 4) == -8\n"
    "      4 assert mul(0, 9) == 0\n      5 ### END HIDDEN TESTS\n",
    "\x1b[31mAssertionError\x1b[39m: mul(-2, 4) is wrong",
]
SECRETS = ("mul(-2, 4) == -8", "mul(0, 9)", "HIDDEN TESTS")


def _grade_meta(grade_id: str, points: int = 2) -> dict:
    return {
        "nbgrader": {
            "grade": True,
            "grade_id": grade_id,
            "locked": True,
            "points": points,
            "score": 0.0,
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
    }


def _notebook() -> nbformat.NotebookNode:
    error = new_output(
        "error", ename="AssertionError", evalue="mul(-2, 4) is wrong", traceback=TRACEBACK
    )
    plain_error = new_output(
        "error", ename="NameError", evalue="name 'x' is not defined", traceback=["line 1: x"]
    )
    return new_notebook(
        cells=[
            new_code_cell("def mul(a, b):\n    return a + b", metadata={}),
            new_code_cell(TEST_SOURCE, metadata=_grade_meta("test_mul"), outputs=[error]),
            new_code_cell("x", metadata=_grade_meta("test_x", 1), outputs=[plain_error]),
            new_markdown_cell("Some text about ### BEGIN SOLUTION markers."),
        ]
    )


def _hide(nb, **config):
    pp = HideHiddenTests(config=Config(config)) if config else HideHiddenTests()
    nb, _ = pp.preprocess(nb, {})
    return nb


def test_hidden_lines_give_way_to_a_placeholder():
    cell = _hide(_notebook()).cells[1]
    assert cell.source.split("\n") == [
        VISIBLE,
        "# (2 hidden test lines not shown)",
        'print("done")',
    ]


def test_a_failing_hidden_test_keeps_its_name_and_message_but_not_its_source():
    nb = _hide(_notebook())
    cell = nb.cells[1]
    (error,) = cell.outputs
    assert (error.ename, error.evalue) == ("AssertionError", "mul(-2, 4) is wrong")
    assert error.traceback == ["AssertionError: mul(-2, 4) is wrong", TRACEBACK_NOTE]
    assert cell.metadata == _grade_meta("test_mul")  # the score nbgrader shows stays
    text = nbformat.writes(nb)
    for secret in SECRETS:
        assert secret not in text


def test_an_error_without_a_message_shows_its_name():
    nb = _notebook()
    nb.cells[1].outputs[0].evalue = ""
    assert _hide(nb).cells[1].outputs[0].traceback == ["AssertionError", TRACEBACK_NOTE]


def test_cells_without_hidden_tests_are_untouched():
    nb = _notebook()
    before = copy.deepcopy(nb)
    after = _hide(nb)
    for index in (0, 2, 3):
        assert after.cells[index] == before.cells[index]
    assert after.metadata == before.metadata


def test_hiding_twice_is_hiding_once():
    once = _hide(_notebook())
    twice = _hide(copy.deepcopy(once))
    assert twice == once


def test_a_begin_marker_without_end_hides_the_rest_of_the_cell():
    source = "assert f(1) == 1\n    ### BEGIN HIDDEN TESTS\nassert f(2) == 2\nassert f(3) == 3"
    nb = new_notebook(cells=[new_code_cell(source, metadata=_grade_meta("t"))])
    assert _hide(nb).cells[0].source == "assert f(1) == 1\n    # (2 hidden test lines not shown)"


def test_nested_and_stray_markers_fail_safe():
    source = "\n".join(
        [
            "### END HIDDEN TESTS",  # stray: dropped
            "a = 1",
            "### BEGIN HIDDEN TESTS",
            "b = 2",
            "### BEGIN HIDDEN TESTS",
            "c = 3",
            "### END HIDDEN TESTS",
            "d = 4",  # still inside the outer region
            "### END HIDDEN TESTS",
            "e = 5",
        ]
    )
    nb = new_notebook(cells=[new_code_cell(source, metadata=_grade_meta("t"))])
    assert _hide(nb).cells[0].source == "a = 1\n# (3 hidden test lines not shown)\ne = 5"


def test_an_indented_region_leaves_valid_python():
    source = (
        "for n in range(3):\n"
        "    assert mul(n, 1) == n\n"
        "    ### BEGIN HIDDEN TESTS\n"
        "    assert mul(n, 0) == 0\n"
        "    ### END HIDDEN TESTS\n"
        "    assert mul(1, n) == n"
    )
    nb = new_notebook(cells=[new_code_cell(source, metadata=_grade_meta("t"))])
    hidden = _hide(nb).cells[0].source
    assert "    # (1 hidden test line not shown)\n" in hidden and "mul(n, 0)" not in hidden
    compile(hidden, "<cell>", "exec")


def test_markdown_placeholders_are_not_headings():
    source = "Answer:\n### BEGIN HIDDEN TESTS\nsecret\n### END HIDDEN TESTS"
    nb = new_notebook(cells=[new_markdown_cell(source, metadata=_grade_meta("t"))])
    assert _hide(nb).cells[0].source == "Answer:\n(1 hidden test line not shown)"


def test_stream_lines_repeating_hidden_source_are_dropped():
    # A warning raised by a hidden test prints the line that raised it.
    warning = new_output(
        "stream",
        name="stderr",
        text="<ipython-input>:3: UserWarning: slow\n  \x1b[1massert mul(0, 9) == 0\x1b[0m\n",
    )
    printed = new_output("stream", name="stdout", text="done\n")
    nb = new_notebook(
        cells=[new_code_cell(TEST_SOURCE, metadata=_grade_meta("t"), outputs=[warning, printed])]
    )
    stderr, stdout = _hide(nb).cells[0].outputs
    assert stderr.text == "<ipython-input>:3: UserWarning: slow\n"
    assert stdout.text == "done\n"


def test_delimiters_follow_the_clear_hidden_tests_config():
    source = "a = 1\n# BEGIN SECRET\nb = 2\n# END SECRET"
    nb = new_notebook(cells=[new_code_cell(source, metadata=_grade_meta("t"))])
    delimiters = {"begin_test_delimeter": "BEGIN SECRET", "end_test_delimeter": "END SECRET"}
    hidden = _hide(nb, ClearHiddenTests=delimiters).cells[0].source
    assert hidden == "a = 1\n# (1 hidden test line not shown)"


def test_config_lines_add_the_preprocessor_to_generate_feedback():
    from nbgrader.converters import GenerateFeedback

    assert config_lines(False) == []
    c = Config()
    exec("\n".join(config_lines(True)), {"c": c})
    preprocessors = GenerateFeedback(config=c).preprocessors
    assert preprocessors[-1] is HideHiddenTests
    assert len(preprocessors) == len(GenerateFeedback(config=Config()).preprocessors) + 1


# --- nbgrader -----------------------------------------------------------------------------


def _page_text(path) -> str:
    """What a reader sees on a feedback page: its body without tags or scripts."""
    page = path.read_text()
    body = page[page.find("<body") :]
    body = re.sub(r"<(script|style)\b.*?</\1>", "", body, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def test_feedback_pages_hide_hidden_tests(toy_course):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    # amy's mul passes the visible test and fails the hidden one; ben's fails the visible
    # one, whose traceback would quote the hidden lines next to it.
    students = {"amy": "return 6 if (a, b) == (2, 3) else 0", "ben": "return a + b"}
    with CourseFolder() as course:
        course.add_source(TOY, solutions)
        course.generate(TOY)
        for student, mul in students.items():
            dest = course.root / "submitted" / student / TOY / f"{TOY}.ipynb"
            edit_cell(release_nb, "add", "def add(a, b):\n    return a + b\n", dest)
            edit_cell(dest, "mul", f"def mul(a, b):\n    {mul}\n")
        graded = run(["autograde", TOY, "--force"], cwd=course.root)
        for student in students:
            notebook = course.root / "autograded" / student / TOY / f"{TOY}.ipynb"
            assert notebook.is_file(), graded.output[-4000:]

        config = course.root / "nbgrader_config.py"
        base = config.read_text()

        def feedback(hide: bool) -> dict[str, str]:
            config.write_text(base + "".join(f"{line}\n" for line in config_lines(hide)))
            made = run(["generate_feedback", TOY, "--force"], cwd=course.root)
            assert made.returncode == 0, made.output[-4000:]
            return {
                student: _page_text(course.root / "feedback" / student / TOY / f"{TOY}.html")
                for student in students
            }

        # As graded, the hidden tests are there to read: what the option takes away.
        for page in feedback(hide=False).values():
            assert "assert mul(-2, 4) == -8" in page and "add(-1, 1)" in page

        pages = feedback(hide=True)
        for student, page in pages.items():
            for secret in ("add(-1, 1)", "mul(-2, 4)", "HIDDEN TESTS"):
                assert secret not in page, f"{secret!r} on {student}'s feedback page"
            assert "Score: 1.0 / 3.0" in page
            assert re.search(r"Grade cell: test_add\s+Score: 1\.0 / 1\.0", page)
            assert re.search(r"Grade cell: test_mul\s+Score: 0\.0 / 2\.0", page)
            assert "AssertionError" in page and TRACEBACK_NOTE in page
            assert page.count("(1 hidden test line not shown)") == 2
            assert VISIBLE in page
        assert "AssertionError: mul(2, 3) should be 6" in pages["ben"]

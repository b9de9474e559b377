"""Feedback pages without hidden test source nor live student HTML: the preprocessor, the
HTML cleaning, and nbgrader running them."""

from __future__ import annotations

import base64
import copy
import html
import json
import re

import nbformat
from conftest import TOY, edit_cell, live_script
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from traitlets.config import Config

from autograde.feedback import (
    AFTER_NOTE,
    MESSAGE_NOTE,
    OUTPUT_NOTE,
    TRACEBACK_NOTE,
    HideHiddenTests,
    clean_html,
    config_lines,
)
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


def test_cells_without_hidden_tests_keep_their_source_and_earlier_ones_their_output():
    nb = _notebook()
    before = copy.deepcopy(nb)
    after = _hide(nb)
    assert after.cells[0] == before.cells[0]  # before any hidden test: untouched
    for index in (2, 3):  # after one: the source kept (outputs: see the test below)
        assert after.cells[index].source == before.cells[index].source
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


def _test_cell(*outputs) -> nbformat.NotebookNode:
    cell = new_code_cell(TEST_SOURCE, metadata=_grade_meta("t"), outputs=list(outputs))
    return _hide(new_notebook(cells=[cell])).cells[0]


# Code under test can read the running cell's source (``In[-1]``) and print it in any form.
ENCODED = base64.b64encode(TEST_SOURCE.encode()).decode()
LEAKS = [
    new_output("stream", name="stdout", text=f"done\n{ENCODED}\n"),
    new_output("stream", name="stderr", text=TEST_SOURCE[::-1]),
    new_output("display_data", data={"text/plain": "\n".join(TEST_SOURCE)}),
    new_output("execute_result", data={"text/html": f"<p>{ENCODED}</p>"}, execution_count=5),
]


def test_a_failing_hidden_test_cell_shows_a_note_instead_of_its_output():
    error = new_output(
        "error", ename="AssertionError", evalue="mul(-2, 4) is wrong", traceback=TRACEBACK
    )
    cell = _test_cell(*copy.deepcopy(LEAKS), error)
    note, shown = cell.outputs
    assert note == new_output("stream", name="stdout", text=f"{OUTPUT_NOTE}\n")
    assert (shown.ename, shown.evalue) == ("AssertionError", "mul(-2, 4) is wrong")


def test_a_passing_hidden_test_cell_shows_a_note_instead_of_its_output():
    cell = _test_cell(*copy.deepcopy(LEAKS))
    assert cell.outputs == [new_output("stream", name="stdout", text=f"{OUTPUT_NOTE}\n")]


def test_a_hidden_test_cell_without_output_gets_no_note():
    assert _test_cell().outputs == []


def test_an_error_message_quoting_a_hidden_line_is_not_shown():
    # e.g. an assert without a message under pytest-style rewriting, or code that raises
    # with the test's source in its message.
    evalue = "failed: \x1b[1massert mul(0, 9) == 0\x1b[0m"
    error = new_output("error", ename="AssertionError", evalue=evalue, traceback=TRACEBACK)
    (shown,) = _test_cell(error).outputs
    assert (shown.ename, shown.evalue) == ("AssertionError", MESSAGE_NOTE)
    assert shown.traceback == [f"AssertionError: {MESSAGE_NOTE}", TRACEBACK_NOTE]


def test_delimiters_follow_the_clear_hidden_tests_config():
    source = "a = 1\n# BEGIN SECRET\nb = 2\n# END SECRET"
    nb = new_notebook(cells=[new_code_cell(source, metadata=_grade_meta("t"))])
    delimiters = {"begin_test_delimeter": "BEGIN SECRET", "end_test_delimeter": "END SECRET"}
    hidden = _hide(nb, ClearHiddenTests=delimiters).cells[0].source
    assert hidden == "a = 1\n# (1 hidden test line not shown)"


def _configured(hide: bool) -> Config:
    c = Config()
    exec("\n".join(config_lines(hide)), {"c": c})
    return c


def test_config_lines_add_the_preprocessor_to_generate_feedback():
    from nbgrader.converters import GenerateFeedback

    preprocessors = GenerateFeedback(config=_configured(True)).preprocessors
    assert preprocessors[-1] is HideHiddenTests
    assert len(preprocessors) == len(GenerateFeedback(config=Config()).preprocessors) + 1
    assert HideHiddenTests not in GenerateFeedback(config=_configured(False)).preprocessors


def test_clean_html_keeps_markup_but_not_scripts():
    page = (
        '<h2 id="t">Title</h2><p>See <a href="https://x.org">x</a> <img src="a.png" alt="a">'
        "</p><table><thead><tr><th>n</th></tr></thead><tbody><tr><td>1</td></tr></tbody>"
        "</table>"
    )
    assert clean_html(page) == page
    assert clean_html("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert clean_html("<img src=x onerror=alert(1)>") == '<img src="x">'
    assert clean_html('<a href=" JavaScript:alert(1)">a</a>') == "<a>a</a>"
    assert clean_html('<a href="data:text/html,<b>">a</a>') == "<a>a</a>"


def test_config_lines_sanitize_html_with_or_without_hidden_tests():
    for hide in (True, False):
        assert _configured(hide).HTMLExporter.sanitize_html is True


# --- nbgrader -----------------------------------------------------------------------------


def _page_text_of(page: str) -> str:
    """What a reader sees on a feedback page: its body without tags or scripts."""
    body = page[page.find("<body") :]
    body = re.sub(r"<(script|style)\b.*?</\1>", "", body, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def _grade(course, toy_course, students: dict[str, dict[str, str]], extra_cells=()) -> None:
    """nbgrader grades in ``course`` each student's toy notebook, whose ``add`` and ``mul``
    cells hold the student's sources and which ends with ``extra_cells``."""
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    course.add_source(TOY, solutions)
    course.generate(TOY)
    for student, cells in students.items():
        dest = course.root / "submitted" / student / TOY / f"{TOY}.ipynb"
        edit_cell(release_nb, "add", cells.get("add", "def add(a, b):\n    return a + b\n"), dest)
        edit_cell(dest, "mul", cells["mul"])
        nb = nbformat.read(dest, as_version=4)
        nb.cells += copy.deepcopy(list(extra_cells))
        nbformat.write(nb, dest)
    graded = run(["autograde", TOY, "--force"], cwd=course.root)
    for student in students:
        notebook = course.root / "autograded" / student / TOY / f"{TOY}.ipynb"
        assert notebook.is_file(), graded.output[-4000:]


def _feedback(course, students, hide: bool) -> dict[str, str]:
    """Each student's feedback page (its HTML), made as ``write_feedback`` makes it."""
    config = course.root / "nbgrader_config.py"
    base = config.read_text()
    config.write_text(base + "".join(f"{line}\n" for line in config_lines(hide)))
    try:
        made = run(["generate_feedback", TOY, "--force"], cwd=course.root)
    finally:
        config.write_text(base)
    assert made.returncode == 0, made.output[-4000:]
    return {
        student: (course.root / "feedback" / student / TOY / f"{TOY}.html").read_text()
        for student in students
    }


def test_feedback_pages_hide_hidden_tests(toy_course):
    # amy's mul passes the visible test and fails the hidden one; ben's fails the visible
    # one, whose traceback would quote the hidden lines next to it.
    students = {
        "amy": {"mul": "def mul(a, b):\n    return 6 if (a, b) == (2, 3) else 0\n"},
        "ben": {"mul": "def mul(a, b):\n    return a + b\n"},
    }
    with CourseFolder() as course:
        _grade(course, toy_course, students)
        # As graded, the hidden tests are there to read: what the option takes away.
        for page in _feedback(course, students, hide=False).values():
            page = _page_text_of(page)
            assert "assert mul(-2, 4) == -8" in page and "add(-1, 1)" in page

        pages = {s: _page_text_of(p) for s, p in _feedback(course, students, hide=True).items()}
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


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# Called by a test cell, a student's function can read that cell (``In[-1]``), hidden tests
# included, and print it past any filter on hidden lines: base64 line by line, or reversed.
LEAKY_ADD = """\
import base64
def add(a, b):
    for line in In[-1].splitlines():
        print(base64.b64encode(line.encode()).decode())
    return a + b
"""
LEAKY_MUL = """\
def mul(a, b):
    print(In[-1][::-1])
    return 6 if (a, b) == (2, 3) else 0
"""
LEAKS_OF_HIDDEN_LINES = [
    _b64("assert add(-1, 1) == 0"),  # test_add, which passes
    "assert mul(-2, 4) == -8"[::-1],  # test_mul, which fails
]

ATTACK = (
    "<p>Eve says {}</p><script>alert('{}')</script><img src=x onerror=alert(1)>"
    '<a href="javascript:alert(2)">a link</a>\n\n[a markdown link](javascript:alert(3))'
)
HARMLESS = ["Eve's notes", "Eve says html", "Eve says markdown", "Eve says result"]
XSS_CELLS = [
    new_markdown_cell("Eve's notes\n\n" + ATTACK.format("nothing", "md")),
    new_code_cell(
        "from IPython.display import HTML, Markdown, display\n"
        f"display(HTML({ATTACK.format('html', 'html')!r}))\n"
        f"display(Markdown({ATTACK.format('markdown', 'markdown')!r}))\n"
        f"HTML({ATTACK.format('result', 'result')!r})\n"
    ),
]


def test_feedback_pages_neither_run_student_html_nor_show_test_cell_output(toy_course):
    students = {"eve": {"add": LEAKY_ADD, "mul": LEAKY_MUL}}
    with CourseFolder() as course:
        _grade(course, toy_course, students, extra_cells=XSS_CELLS)
        pages = {hide: _feedback(course, students, hide)["eve"] for hide in (False, True)}
    # Shown as graded, the printed hidden tests are there: the attack works.
    for leak in LEAKS_OF_HIDDEN_LINES:
        assert leak in _page_text_of(pages[False])
    for hide, page in pages.items():
        assert live_script(page) == [], f"hide={hide}"
        text = _page_text_of(page)
        for harmless in HARMLESS:
            assert harmless in text, f"{harmless!r} missing with hide={hide}"
        assert "Grade cell: test_mul" in text
    text = _page_text_of(pages[True])
    for leak in LEAKS_OF_HIDDEN_LINES:
        assert leak not in text
    assert text.count(OUTPUT_NOTE) == 2


def test_cells_after_hidden_tests_show_no_output_but_their_errors():
    """A cell run after a hidden test can print it (kept from `In`): its output gives way
    to a note, its error keeps name and message unless they quote a hidden line."""
    nb = nbformat.v4.new_notebook()
    before = nbformat.v4.new_code_cell("print('early')")
    before.outputs = [nbformat.v4.new_output("stream", name="stdout", text="early\n")]
    test = nbformat.v4.new_code_cell(
        "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(-7) == 41\n### END HIDDEN TESTS",
        metadata={"nbgrader": {"grade": True, "grade_id": "t", "points": 1, "solution": False}},
    )
    later = nbformat.v4.new_code_cell("import base64\nprint(base64.b64encode(In[2].encode()))")
    leaked = "YXNzZXJ0IGYoLTcpID09IDQx"  # base64 of the hidden line
    later.outputs = [nbformat.v4.new_output("stream", name="stdout", text=leaked + "\n")]
    quoting = nbformat.v4.new_code_cell("raise ValueError(In[2])")
    quoting.outputs = [nbformat.v4.new_output(
        "error", ename="ValueError", evalue="assert f(-7) == 41", traceback=["..."]
    )]  # fmt: skip
    nb.cells = [before, test, later, quoting]
    out, _ = HideHiddenTests().preprocess(nb, {})
    texts = json.dumps([c.get("outputs", []) for c in out.cells])
    assert "early" in texts, "output before any hidden test is kept"
    assert leaked not in texts and "f(-7)" not in texts
    assert AFTER_NOTE in texts
    error = out.cells[3].outputs[-1]
    assert (error.ename, error.evalue) == ("ValueError", MESSAGE_NOTE)

"""Feedback pages that do not give away the hidden tests, nor run a student's HTML.

``nbgrader generate_feedback`` renders the autograded notebook, and autograding restores
every test cell from the gradebook, hidden tests included; a failing test's traceback
quotes the lines around the failure too. ``HideHiddenTests`` is a preprocessor for that
run. In every cell it replaces each hidden test region (``### BEGIN HIDDEN TESTS`` to
``### END HIDDEN TESTS``) with one comment line saying how many lines it held. In a cell
that had hidden tests, an error keeps its name and message (the student still sees which
test cell failed, and why) unless the message quotes a hidden line, when it becomes a
note; its traceback becomes that one line and a note. Every other output of such a cell,
whether the tests passed or failed, gives way to one note: the student's code ran inside
the test cell, where it can read the cell's source (``In[-1]``) and print it in any form,
so no filter on what it printed would do. For the same reason every cell after the first
one with hidden tests shows a note instead of its output (its errors keep their name and
message): code run later can print tests it kept. Cells before it, every cell's source,
and the scores nbgrader shows are left as they are.

Student HTML is cleaned on every page, hidden tests or not: ``HTMLExporter.sanitize_html``
runs the ``text/html`` and ``text/markdown`` outputs through the ``clean_html`` filter and
leaves out JavaScript outputs and widgets. nbgrader's feedback template renders markdown
cells (and grader comments) without that filter, as ``markdown2html | strip_files_prefix``,
so ``strip_files_prefix`` is replaced by one that cleans too. Both use ``clean_html`` here,
which keeps headings, paragraphs, tables and images that nbconvert's own would show as
escaped tags; scripts, event handlers and ``javascript:`` links are shown as text or dropped.

``config_lines(hide)`` gives the nbgrader configuration lines that switch all this on, to
append to a course's ``nbgrader_config.py``. The delimiters are those of nbgrader's
``ClearHiddenTests`` (configured there, or on ``HideHiddenTests`` itself).
"""

from __future__ import annotations

import re

import bleach
from nbconvert import filters
from nbformat.v4 import new_output
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import List

# Terminal colour codes: tracebacks and stream output often hold them.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

TRACEBACK_NOTE = "(This cell has hidden tests: the traceback is not shown.)"
OUTPUT_NOTE = "(This cell has hidden tests: its output is not shown.)"
MESSAGE_NOTE = "(message not shown: it quotes a hidden test line)"
AFTER_NOTE = "(Output after hidden tests ran is not shown: it could print them.)"

# What student HTML may keep on a feedback page: markup, no scripts, no event handlers,
# links and images by http(s) (mailto for links) or relative URL only.
HTML_TAGS = bleach.ALLOWED_TAGS | {
    *("p", "br", "hr", "div", "span", "pre", "h1", "h2", "h3", "h4", "h5", "h6"),
    *("img", "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td"),
    *("sub", "sup", "del", "s", "u", "kbd", "dl", "dt", "dd", "details", "summary"),
}
HTML_ATTRIBUTES = {
    "*": ["class", "id", "title"],
    "a": ["href"],
    "img": ["src", "alt", "width", "height"],
    "th": ["colspan", "rowspan"],
    "td": ["colspan", "rowspan"],
}
URL_SCHEMES = {"http", "https", "mailto"}


def placeholder(count: int, cell_type: str = "code", indent: str = "") -> str:
    """The line that stands where ``count`` hidden test lines were."""
    text = f"({count} hidden test {'line' if count == 1 else 'lines'} not shown)"
    return f"{indent}# {text}" if cell_type == "code" else f"{indent}{text}"


class HideHiddenTests(ClearHiddenTests):
    """Take hidden test source out of a graded notebook, keeping which tests failed.

    A begin marker without its end hides the rest of the cell, and nested begin markers
    are counted, so a malformed region is hidden rather than shown. Scores and other
    nbgrader metadata are not touched. Running it twice changes nothing more.
    """

    # Configurable, as on nbgrader's GetGrades: the HTML exporter sets it for every
    # preprocessor, and traitlets warns about settings a class does not take.
    display_data_priority = List(NbGraderPreprocessor.display_data_priority.default_value).tag(
        config=True
    )

    def hide_source(self, source: str, cell_type: str = "code") -> tuple[str, list[str]]:
        """``source`` with its hidden regions replaced, and the lines that were hidden."""
        kept: list[str] = []
        hidden: list[str] = []
        region: list[str] = []
        depth, indent = 0, ""
        for line in source.split("\n"):
            if self.begin_test_delimeter in line:
                if depth == 0:
                    indent = line[: len(line) - len(line.lstrip())]
                    region = []
                depth += 1
            elif self.end_test_delimeter in line:
                if depth == 1:
                    kept.append(placeholder(len(region), cell_type, indent))
                    hidden += region
                depth = max(depth - 1, 0)  # a stray end marker is dropped
            elif depth:
                region.append(line)
            else:
                kept.append(line)
        if depth:  # no end marker: everything after the begin marker stays hidden
            self.log.warning("Hidden tests without an end marker: hiding the rest of the cell")
            kept.append(placeholder(len(region), cell_type, indent))
            hidden += region
        return "\n".join(kept), hidden

    def preprocess(self, nb, resources):
        # ClearHiddenTests.preprocess would also drop the notebook's toolbar setting.
        hidden_so_far: list[str] = []
        for index, cell in enumerate(nb.cells):
            hidden = self.hide_source(cell.source, cell.cell_type)[1]
            if hidden_so_far and not hidden and "outputs" in cell:
                # A cell run after hidden tests can print them (kept from `In`, or from a
                # hook that saw the cell run): its output gives way to a note too.
                cell.outputs = hide_outputs(cell.outputs, hidden_so_far, AFTER_NOTE)
            nb.cells[index], resources = self.preprocess_cell(cell, resources, index)
            hidden_so_far += hidden
        return nb, resources

    def preprocess_cell(self, cell, resources, cell_index):
        source, hidden = self.hide_source(cell.source, cell.cell_type)
        if source == cell.source:
            return cell, resources
        if not utils.is_grade(cell):
            self.log.warning("Hidden tests in cell %d, which is not a grade cell", cell_index)
        cell.source = source
        if "outputs" in cell:
            cell.outputs = hide_outputs(cell.outputs, hidden)
        return cell, resources


def hide_outputs(outputs: list, hidden: list[str], note: str = OUTPUT_NOTE) -> list:
    """A hidden-test cell's outputs (or a later cell's): its errors without traceback, the
    rest one note."""
    secret = {_plain(line).strip() for line in hidden} - {""}
    errors = [
        _hide_traceback(output, secret) for output in outputs if output.output_type == "error"
    ]
    if len(errors) == len(outputs):
        return errors
    return [new_output("stream", name="stdout", text=f"{note}\n"), *errors]


def _hide_traceback(error, secret: set[str]):
    if any(line in _plain(error.evalue) for line in secret):
        error.evalue = MESSAGE_NOTE
    first = f"{error.ename}: {error.evalue}" if error.evalue else error.ename
    error.traceback = [first, TRACEBACK_NOTE]
    return error


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def clean_html(html: str) -> str:
    """``html`` without scripts, event handlers or unsafe links; other tags it does not
    allow are shown as text."""
    return bleach.clean(
        str(html), tags=HTML_TAGS, attributes=HTML_ATTRIBUTES, protocols=URL_SCHEMES
    )


def strip_files_prefix(html: str) -> str:
    """nbconvert's ``strip_files_prefix`` filter, then ``clean_html``."""
    return clean_html(filters.strip_files_prefix(html))


def config_lines(hide: bool = True) -> list[str]:
    """nbgrader configuration lines that make ``generate_feedback`` clean student HTML and
    hide hidden tests.

    They go after ``c = get_config()`` in a course's ``nbgrader_config.py``. With
    ``hide=False`` the hidden tests stay: feedback shows the notebook as graded, cleaned.
    """
    page_filters = {name: f"{__name__}.{name}" for name in ("clean_html", "strip_files_prefix")}
    lines = [
        "c.HTMLExporter.sanitize_html = True",
        f"c.HTMLExporter.filters = {page_filters!r}",
    ]
    if hide:
        lines.append("from autograde.feedback import HideHiddenTests")
        lines.append("c.GenerateFeedback.preprocessors.append(HideHiddenTests)")
    return lines

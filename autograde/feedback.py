"""Feedback pages that do not give away the hidden tests.

``nbgrader generate_feedback`` renders the autograded notebook, and autograding restores
every test cell from the gradebook, hidden tests included; a failing test's traceback
quotes the lines around the failure too. ``HideHiddenTests`` is a preprocessor for that
run. In every cell it replaces each hidden test region (``### BEGIN HIDDEN TESTS`` to
``### END HIDDEN TESTS``) with one comment line saying how many lines it held. In a cell
that had hidden tests, an error keeps its name and message (the student still sees which
test cell failed, and why) but its traceback becomes that one line and a note, and stream
output lines that repeat a hidden line are dropped. Cells without hidden tests, and the
scores nbgrader shows, are left as they are.

``config_lines(hide)`` gives the nbgrader configuration lines that switch it on, to append
to a course's ``nbgrader_config.py``. The delimiters are those of nbgrader's
``ClearHiddenTests`` (configured there, or on ``HideHiddenTests`` itself).
"""

from __future__ import annotations

import re

from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import List

# Terminal colour codes: tracebacks and stream output often hold them.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

TRACEBACK_NOTE = "(This cell has hidden tests: the traceback is not shown.)"


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
        for index, cell in enumerate(nb.cells):
            nb.cells[index], resources = self.preprocess_cell(cell, resources, index)
        return nb, resources

    def preprocess_cell(self, cell, resources, cell_index):
        source, hidden = self.hide_source(cell.source, cell.cell_type)
        if source == cell.source:
            return cell, resources
        if not utils.is_grade(cell):
            self.log.warning("Hidden tests in cell %d, which is not a grade cell", cell_index)
        cell.source = source
        secret = {_plain(line).strip() for line in hidden} - {""}
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                first = f"{output.ename}: {output.evalue}" if output.evalue else output.ename
                output.traceback = [first, TRACEBACK_NOTE]
            elif output.output_type == "stream":
                lines = output.text.split("\n")
                output.text = "\n".join(x for x in lines if _plain(x).strip() not in secret)
        return cell, resources


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def config_lines(hide: bool = True) -> list[str]:
    """nbgrader configuration lines that make ``generate_feedback`` hide hidden tests.

    They go after ``c = get_config()`` in a course's ``nbgrader_config.py``. With
    ``hide=False`` there is nothing to add: feedback shows the notebook as graded.
    """
    if not hide:
        return []
    return [
        "from autograde.feedback import HideHiddenTests",
        "c.GenerateFeedback.preprocessors.append(HideHiddenTests)",
    ]

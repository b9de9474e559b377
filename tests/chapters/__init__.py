"""Plausible wrong answers, one module per chapter: ``chNN_topic.py`` → ``WRONG_ANSWERS``.

A wrong answer is best written as the solution cell with one mistake made in it:
``Mistakes(chapter)`` reads the chapter's solution cells, and calling it applies edits to
one of them, failing loudly when the text to change is no longer there exactly once, so a
list of wrong answers cannot silently drift away from the chapter.
"""

from __future__ import annotations

from conftest import REPO

from autograde import notebooks
from autograde.probe import WrongAnswer


class Mistakes:
    """mistake = Mistakes("07_flash_attention"); mistake(exercise, name, (old, new), ...)."""

    def __init__(self, chapter: str):
        solution = notebooks.read(REPO / "solutions" / chapter / f"{chapter}.ipynb")
        self.cells = {
            c.metadata["nbgrader"]["grade_id"]: c.source
            for c in solution.cells
            if notebooks.is_solution(c)
        }

    def __call__(self, exercise: str, name: str, *edits: tuple[str, str]) -> WrongAnswer:
        """The solution of `exercise` with each (old, new) edit made; each `old` occurs once."""
        code = self.cells[exercise]
        for old, new in edits:
            count = code.count(old)
            if count != 1:
                raise AssertionError(f"{exercise} / {name}: {old!r} occurs {count} times, not once")
            code = code.replace(old, new)
        return WrongAnswer(exercise, name, code)

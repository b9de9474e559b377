"""How one grading run grades: decided once by `autograde.grade.grade`, then read by its
workers (`autograde.workers`) and its report (`autograde.report`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .sandbox import Limits


@dataclass(frozen=True)
class GradeOptions:
    """Everything a grading run's workers and report need besides the submissions."""

    out: Path  # grades.csv, logs/, autograded/, feedback/ (and the SQLite gradebook)
    db_url: str  # the gradebook
    solutions: Path  # the instructor's source: each worker's course generates from it
    release: Path  # the released assignments: the scratch folder's input files
    assignments: tuple[str, ...]  # what the workers grade (each is set up for all of them)
    timeout: float  # seconds per submission, all its cells together
    cell_timeout: int  # seconds per cell
    limits: Limits  # what each student kernel may use
    hide: tuple[str, ...]  # folders a kernel sees as empty, unreadable ones
    preload: tuple[str, ...]  # what each worker's fork server imports; () for no server
    workers: int  # submissions graded at once
    hide_hidden_tests: bool  # feedback leaves the hidden tests' source and output out
    unsandboxed: bool = False  # --unsafe-no-sandbox: every feedback page says so
    allow_library_answers: bool = False  # self-paced use: the library's answers score too

    def __post_init__(self):
        for name in ("timeout", "cell_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")

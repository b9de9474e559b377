"""Prove that graded test cells can fail.

``probe`` runs a solution notebook top to bottom in one kernel (every graded cell must
pass), then, exercise by exercise, swaps the solution cell for the release stub and for
each *plausible wrong answer* the caller supplies, and reruns that exercise's test cells:
every one of them must fail each time. *Reference answers* (the library's own version of
the exercise) are swapped in too, and must pass every test cell: the notebook's tests and
the library hold the two to the same behaviour. Finally it restores the solution and
checks the tests pass again, so a wrong answer cannot leak into the next exercise.

The release's own test cells (visible asserts only: nbgrader strips the hidden ones) are
run on each stub as well and must fail too, so a learner never sees a test pass on a stub.
That makes the probe's one run of a chapter also do the work of ``check``'s executions
(the solution's tests pass, no graded test passes on a stub): the test suite executes
each chapter once here and once in the grading sandbox, and no more.

``setup`` and ``teardown`` run in the kernel before the first cell and after the solution
run: a harness that watches the whole chapter (device placement, say) goes there. An
error in either is reported as a failure of the solution run.

The wrong answers live with the chapter's tests (``tests/chapters/``); the stubs come from
the release notebook, so what learners actually see is what is proven to fail.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from . import channels, notebooks
from .workspace import TWIN_PATTERN, tool_env


@dataclass(frozen=True)
class WrongAnswer:
    """A plausible mistake: ``code`` replaces the whole solution cell ``exercise``."""

    exercise: str
    name: str
    code: str


class ProbeAborted(RuntimeError):
    """A cell hung past the timeout or killed the kernel: the probe cannot go on."""


@dataclass(frozen=True)
class ReferenceAnswer:
    """Another right answer (the library's reference, say): the tests must pass on it."""

    exercise: str
    name: str
    code: str


@dataclass
class ProbeReport:
    solution_failures: dict[str, str] = field(default_factory=dict)  # cell id -> error
    passed_wrongly: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    not_restored: dict[str, str] = field(default_factory=dict)
    broken_variants: dict[tuple[str, str], str] = field(default_factory=dict)
    rejected_references: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    tried: list[tuple[str, str]] = field(default_factory=list)  # (exercise, variant)
    # What each run took: (what ran, seconds), in order. A solution cell is named by its
    # cell id; a variant's cells by "exercise / variant: cell".
    seconds: list[tuple[str, float]] = field(default_factory=list)

    def slowest(self, count: int = 5) -> list[tuple[str, float]]:
        return sorted(self.seconds, key=lambda item: -item[1])[:count]


def _cell_id(cell, index: int) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {index}")


def _stderr(cell) -> str | None:
    """Why nbgrader would score this executed test cell 0 though it raised nothing: it wrote
    to stderr (a warning, a library's log line), which nbgrader counts as a failure."""
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == "stderr":
            first = next((line for line in output.text.splitlines() if line.strip()), "")
            return f"wrote to stderr, which nbgrader scores 0: {first[:300]}"
    return None


def _error(err: CellExecutionError) -> str:
    return f"{err.ename}: {err.evalue}"


def probe(
    solution: Path,
    release: Path,
    wrong_answers: list[WrongAnswer],
    timeout: int = 600,
    references: list[ReferenceAnswer] = (),
    setup: str | None = None,
    teardown: str | None = None,
) -> ProbeReport:
    """Run the checks described in the module docstring; return what went wrong."""
    nb = notebooks.read(solution)
    released = notebooks.read(release)
    stubs = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in released.cells
        if notebooks.is_solution(c)
    }
    release_tests = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in released.cells
        if notebooks.is_graded_test(c)
    }
    cells = {_cell_id(c, i): c for i, c in enumerate(nb.cells)}
    tests_of = notebooks.exercises(nb)
    missing = sorted(set(tests_of) - set(stubs))
    if missing:
        raise ValueError(f"{release} has no stub for {missing}: run `python -m autograde release`")
    unknown = {w.exercise for w in [*wrong_answers, *references]} - set(tests_of)
    if unknown:
        raise ValueError(f"wrong answers name unknown exercises {sorted(unknown)}")

    report = ProbeReport()
    saved = dict(os.environ)
    os.environ.update(tool_env(smoke=True))
    # Run in a copy of the chapter's folder: whatever the notebook writes (checkpoints,
    # exports, figures) must not land in the repository.
    scratch = tempfile.TemporaryDirectory(prefix="twin-gpt-probe-")
    workdir = Path(scratch.name) / solution.parent.name
    shutil.copytree(
        solution.parent, workdir, ignore=shutil.ignore_patterns(TWIN_PATTERN, ".*", "*.ipynb")
    )
    try:
        client = NotebookClient(
            # The client gets a notebook of its own, to which each run appends its cell: every
            # run has its own index, so a display a later cell updates (a live plot) is found.
            nbformat.v4.new_notebook(metadata=copy.deepcopy(nb.metadata)),
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
            config=channels.config(),  # a missed wake-up costs a second, not `timeout`
        )
        with client.setup_kernel():

            def execute(source: str, graded: bool = False, label: str = "") -> str | None:
                cell = nbformat.v4.new_code_cell(source)
                client.nb.cells.append(cell)
                start = time.monotonic()
                try:
                    client.execute_cell(cell, len(client.nb.cells) - 1)
                except CellExecutionError as err:
                    return _error(err)
                except (CellTimeoutError, DeadKernelError) as err:
                    # A variant that hangs or kills the kernel fails, but the kernel is gone
                    # or busy: nothing after it can be trusted, so stop here.
                    raise ProbeAborted(f"{type(err).__name__} while running:\n{source}") from err
                finally:
                    report.seconds.append((label, time.monotonic() - start))
                return _stderr(cell) if graded else None

            if setup is not None and (err := execute(setup, label="probe setup")) is not None:
                report.solution_failures["probe setup"] = err
                return report
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                graded = notebooks.is_graded_test(cell)
                if (err := execute(cell.source, graded, _cell_id(cell, index))) is not None:
                    report.solution_failures[_cell_id(cell, index)] = err
            if (
                teardown is not None
                and (err := execute(teardown, label="probe teardown")) is not None
            ):
                report.solution_failures["probe teardown"] = err
            if report.solution_failures:
                return report

            for exercise, tests in tests_of.items():
                variants = [("stub", stubs[exercise])] + [
                    (w.name, w.code) for w in wrong_answers if w.exercise == exercise
                ]
                for name, code in variants:
                    report.tried.append((exercise, name))
                    if (err := execute(code, label=f"{exercise} / {name}")) is not None:
                        # A variant that cannot even be defined proves nothing.
                        report.broken_variants[(exercise, name)] = err
                        continue
                    passed = [
                        t for t in tests
                        if execute(cells[t].source, True, f"{exercise} / {name}: {t}") is None
                    ]  # fmt: skip
                    if name == "stub":  # what the learner sees: the release's test cells
                        passed += [
                            f"{t} (as released)"
                            for t in tests
                            if t in release_tests
                            and execute(
                                release_tests[t], True, f"{exercise} / stub: {t} (as released)"
                            )
                            is None
                        ]
                    if passed:
                        report.passed_wrongly[(exercise, name)] = passed
                for ref in (r for r in references if r.exercise == exercise):
                    report.tried.append((exercise, ref.name))
                    if (err := execute(ref.code, label=f"{exercise} / {ref.name}")) is not None:
                        report.broken_variants[(exercise, ref.name)] = err
                        continue
                    failed = [
                        t for t in tests
                        if execute(cells[t].source, True, f"{exercise} / {ref.name}: {t}")
                        is not None
                    ]  # fmt: skip
                    if failed:
                        report.rejected_references[(exercise, ref.name)] = failed
                execute(cells[exercise].source, label=f"{exercise} / restored")
                for test in tests:
                    restored = f"{exercise} / restored: {test}"
                    if (err := execute(cells[test].source, True, restored)) is not None:
                        report.not_restored[test] = err
    finally:
        os.environ.clear()
        os.environ.update(saved)
        scratch.cleanup()
    return report

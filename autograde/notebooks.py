"""Notebook files: authoring pairs, normal form, and comparison.

Each chapter is authored as a py:percent script (``solutions/NN_topic/NN_topic.py``) that
jupytext turns into the solution notebook beside it. nbgrader's cell metadata lives on the
``# %%`` line, so the script is the easy-to-review source and the ``.ipynb`` is what nbgrader
reads. Committed notebooks carry no outputs and no execution counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nbformat is imported where used: it costs seconds at import time
    import nbformat

# Cell metadata that only describes how jupytext laid out the text file.
_LAYOUT_KEYS = ("lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker")


class NotebookError(RuntimeError):
    """A notebook file that cannot be read, or that breaks a course rule."""


def read(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook, with an error that names the file."""
    try:
        text = Path(path).read_bytes()
    except OSError as err:
        msg = f"{path}: not a readable notebook ({type(err).__name__}: {err})"
        raise NotebookError(msg) from err
    return parse(text, path)


def parse(text: bytes | str, name: str | Path) -> nbformat.NotebookNode:
    """Validate a notebook's bytes (read by the caller), with an error that names `name`."""
    import nbformat

    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except nbformat.ValidationError as err:
        raise NotebookError(f"{name}: not a valid notebook ({err.message})") from err
    except Exception as err:  # a submission can be any bytes: never let one crash a run
        raise NotebookError(
            f"{name}: not a readable notebook ({type(err).__name__}: {err})"
        ) from err
    return nb


def normalize(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip outputs, execution counts and layout-only metadata, in place; return nb.

    Cell ids are made deterministic (the nbgrader grade_id, else the cell's position) so
    that regenerating a notebook gives the same bytes.
    """
    for index, cell in enumerate(nb.cells):
        for key in _LAYOUT_KEYS:
            cell.metadata.pop(key, None)
        cell.id = cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell-{index}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("jupytext", None)
    nb.metadata.pop("papermill", None)
    nb.nbformat, nb.nbformat_minor = 4, 5  # 4.5: the first version with cell ids
    return nb


def dumps(nb: nbformat.NotebookNode) -> str:
    """The canonical text of a notebook: normal form, as Jupyter itself writes it."""
    import nbformat

    nb = normalize(nbformat.from_dict(json.loads(json.dumps(nb))))
    return nbformat.writes(nb) + "\n"


def from_script(script: Path) -> nbformat.NotebookNode:
    """Build the notebook a py:percent script describes."""
    import jupytext

    try:
        nb = jupytext.read(str(script), fmt="py:percent")
    except Exception as err:  # jupytext raises several types for malformed headers
        raise NotebookError(f"{script}: cannot parse as a py:percent notebook ({err})") from err
    return normalize(nb)


def script_pairs(folder: Path, names: list[str] | None = None) -> list[tuple[Path, Path]]:
    """(script, notebook) pairs under ``folder``: ``NN_topic/NN_topic.py`` ↔ ``.ipynb``.

    ``names`` limits them to those assignments (all by default).
    """
    pairs = []
    for script in sorted(folder.glob("*/*.py")):
        if script.stem == script.parent.name and (names is None or script.stem in names):
            pairs.append((script, script.with_suffix(".ipynb")))
    return pairs


def sync(folder: Path, names: list[str] | None = None) -> list[Path]:
    """Regenerate each paired notebook from its script; return the notebooks rewritten."""
    changed = []
    for script, notebook in script_pairs(folder, names):
        fresh = dumps(from_script(script))
        if not notebook.exists() or notebook.read_text(encoding="utf-8") != fresh:
            notebook.parent.mkdir(parents=True, exist_ok=True)
            notebook.write_text(fresh, encoding="utf-8")
            changed.append(notebook)
    return changed


def out_of_sync(folder: Path, names: list[str] | None = None) -> list[str]:
    """Problems with the pairs under ``folder``: missing or stale notebooks, outputs."""
    problems = []
    for script, notebook in script_pairs(folder, names):
        if not notebook.exists():
            problems.append(f"{notebook}: missing; run `python -m autograde release`")
            continue
        on_disk = notebook.read_text(encoding="utf-8")
        if dumps(read(notebook)) != on_disk:
            problems.append(f"{notebook}: has outputs or is not in canonical form")
        elif dumps(from_script(script)) != on_disk:
            problems.append(
                f"{notebook}: differs from {script.name}; run `python -m autograde release`"
            )
    return problems


def is_solution(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution"))


def is_graded_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def exercises(nb: nbformat.NotebookNode) -> dict[str, list[str]]:
    """Map each solution cell's grade_id to the graded test cells that follow it.

    A course exercise is a solution cell followed by its test cells; the tests of one
    exercise end where the next solution cell begins.
    """
    mapping: dict[str, list[str]] = {}
    current = None
    for cell in nb.cells:
        if is_solution(cell) and cell.cell_type == "code":
            current = cell.metadata["nbgrader"]["grade_id"]
            mapping[current] = []
        elif is_graded_test(cell) and current is not None:
            mapping[current].append(cell.metadata["nbgrader"]["grade_id"])
    return mapping

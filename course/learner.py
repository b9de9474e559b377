"""The learner's own code, carried from one chapter to the next.

A chapter in which the learner writes a class the later chapters build on (the GPT of
chapter 05, its Keras twin in chapter 06) ends with

    learner.save("gpt_torch", ["GPT", "train_step"])

which finds the newest definition of each name among the cells the notebook has run and
writes them, with the imports they need, to ``gpt_torch.py`` in the learner's folder
(`folder()`: beside the chapter folders). A later chapter starts with

    GPT = learner.load("gpt_torch", "GPT", fallback=course.torch.GPT)

and works on the learner's model when it is there and imports, on the library's otherwise,
saying which one it took and why. Graded cells never depend on it: the grader has only
one chapter's notebook, so a learner whose earlier chapter failed is not graded down
again. Saving never stops a notebook: a problem is a warning.

Framework-neutral: this module imports neither framework (the saved module does).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from course.files import write_text

__all__ = ["FOLDER_ENV", "folder", "save", "load", "definitions"]

FOLDER_ENV = "COURSE_LEARNER_DIR"
_FOLDER_NAME = "my_code"  # beside the chapter folders: notebooks/my_code/gpt_torch.py

# What every saved module starts with: the names the course's chapters write with.
_HEADER = '''"""{module}: the code you wrote in the course's notebooks, saved by course.learner.

Later chapters import it (course.learner.load) when it is here, the library's otherwise.
Edit it if you like; run the chapter that wrote it again to write it anew.
"""
# ruff: noqa
from __future__ import annotations

import math

'''


def folder() -> Path:
    """Where saved modules go: $COURSE_LEARNER_DIR, else ``my_code/`` beside the folder of
    the running notebook (the chapters sit side by side, so every chapter finds it)."""
    if os.environ.get(FOLDER_ENV):
        return Path(os.environ[FOLDER_ENV]).expanduser()
    return Path.cwd().parent / _FOLDER_NAME


def _check_module_name(module: str) -> None:
    if not isinstance(module, str) or not module.isidentifier() or module.startswith("_"):
        raise ValueError(
            f"module must be a plain Python module name like 'gpt_torch', got {module!r}"
        )


def _history() -> list[str]:
    """The sources of the cells this IPython kernel has run, oldest first ([] elsewhere)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return []
    return [str(cell) for cell in shell.user_ns.get("In", []) if cell]


def definitions(sources: Iterable[str], names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(the newest top-level definition of each name, the import lines of the cells holding
    them) found in `sources` (cell texts, oldest first). A cell that does not parse (a
    magic, a typo) is passed over; a name defined nowhere is left out of the dict."""
    found: dict[str, str] = {}
    imports: list[str] = []
    for source in reversed(list(sources)):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        holds = False
        for node in tree.body:
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if is_def and node.name in names and node.name not in found:
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = source.splitlines()[start - 1 : node.end_lineno]
                found[node.name] = "\n".join(lines)
                holds = True
        if holds:
            for node in tree.body:
                if isinstance(node, ast.Import | ast.ImportFrom):
                    line = ast.get_source_segment(source, node)
                    if line and line not in imports:
                        imports.append(line)
    return found, imports


def save(module: str, names: Sequence[str], imports: Sequence[str] = ()) -> Path | None:
    """Write the newest definitions of `names` from this notebook's cells to
    ``folder()/<module>.py``, with `imports` (lines such as ``"import torch"``) and the
    import lines of the cells they came from; return its path, or None (with a warning
    saying why) when there is nothing to save or the folder cannot be written."""
    _check_module_name(module)
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty list of names, got {names!r}")
    found, cell_imports = definitions(_history(), names)
    missing = [name for name in names if name not in found]
    if missing:
        warnings.warn(
            f"not saved: no cell this notebook ran defines {', '.join(missing)} "
            "(run the cells that define them, then this one)",
            stacklevel=2,
        )
        return None
    lines = list(dict.fromkeys([*imports, *cell_imports]))
    text = _HEADER.format(module=module) + "\n".join(lines) + "\n\n\n"
    text += "\n\n\n".join(found[name] for name in names) + "\n"
    path = folder() / f"{module}.py"
    try:
        write_text(path, text)
    except OSError as err:
        warnings.warn(f"not saved: cannot write {path} ({err})", stacklevel=2)
        return None
    print(f"saved {', '.join(names)} to {path}")
    return path


def _import_file(module: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"course_learner_{module}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def load(module: str, name: str, fallback: Any) -> Any:
    """`name` from the learner's saved `module` when it is there and imports, else
    `fallback` (the library's); prints which one it took and, for the fallback, why."""
    _check_module_name(module)
    path = folder() / f"{module}.py"
    if not path.is_file():
        print(f"{name}: the library's (no {path} yet: the chapter that writes it saves it)")
        return fallback
    try:
        value = getattr(_import_file(module, path), name)
    except Exception as err:  # anything the learner's file does wrong: say it, go on
        print(f"{name}: the library's, because {path} does not load: {type(err).__name__}: {err}")
        return fallback
    print(f"{name}: yours, from {path}")
    return value

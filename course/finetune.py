"""Fine-tuning on a new domain (chapter 08): the domains' text, and LoRA measured against
full fine-tuning. Framework-neutral: this module imports neither framework.

A character model has a fixed vocabulary, so a new domain must be written in it:

    from course.finetune import upper_case, stdlib_docstrings, onto_vocabulary
    upper = upper_case(text, tokenizer)              # the same plays in capitals: all in vocab
    docs, replaced = onto_vocabulary(stdlib_docstrings(), tokenizer)  # '_', digits... -> ' '

`comparison_rows` and `format_table` lay out what chapter 08 and `benchmarks/lora.py`
measure of each fine-tuning run, from the numbers the caller gathered.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from course.data import train_val_split

# Modules whose docstrings make the exploration domain: pure-Python standard-library
# modules whose documentation is prose with code in it, stable within a Python version.
DOCSTRING_MODULES = (
    "argparse", "collections", "csv", "dataclasses", "fractions", "functools", "heapq",
    "json", "pathlib", "shutil", "statistics", "string", "textwrap", "zipfile",
)  # fmt: skip


def upper_case(text: str, tokenizer) -> str:
    """`text` in capitals, refused with the characters at fault if any capital is not in
    the tokenizer's vocabulary (str.upper can add characters: 'ß'.upper() is 'SS', and a
    lower-case letter may have no capital in the corpus at all)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    upper = text.upper()
    missing = sorted(set(upper) - set(_vocabulary(tokenizer)))
    if missing:
        raise ValueError(
            f"the upper-case text has {len(missing)} characters outside the vocabulary of "
            f"{len(_vocabulary(tokenizer))}: {''.join(missing)!r}; map them first "
            "(course.finetune.onto_vocabulary)"
        )
    return upper


def _vocabulary(tokenizer) -> list[str]:
    chars = getattr(tokenizer, "chars", None)
    if not isinstance(chars, list):
        raise TypeError(
            f"a character tokenizer (course.tokenizers.CharTokenizer) is needed, got "
            f"{type(tokenizer).__name__}"
        )
    return chars


def stdlib_docstrings(
    modules: Sequence[str] = DOCSTRING_MODULES, max_chars: int | None = None
) -> str:
    """The docstrings of the standard-library `modules` and of the public classes,
    functions and methods they define, in a fixed order (modules as given, members by
    name), separated by blank lines, each text once. Cut to `max_chars` characters if
    given. Runs offline: nothing is downloaded.

    Only an object's own docstring counts (`__doc__`, cleaned as `inspect.getdoc` does),
    never one inherited from a base class, and only members defined in the module itself:
    importing PyTorch or Keras patches a few standard-library objects (`inspect.getfile`,
    `collections.abc.Mapping.get.__doc__`), and the text must not depend on that."""
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
    texts: list[str] = []
    seen: set[str] = set()

    def add(obj) -> None:  # its own docstring only: inspect.getdoc would inherit one
        doc = obj.__doc__ if isinstance(obj.__doc__, str) else None
        doc = inspect.cleandoc(doc) if doc else None
        if doc and doc not in seen:
            seen.add(doc)
            texts.append(doc)

    for name in modules:
        module = importlib.import_module(name)
        add(module)
        for member_name, member in sorted(vars(module).items()):
            if member_name.startswith("_") or getattr(member, "__module__", None) != name:
                continue
            if inspect.isclass(member):
                add(member)
                for attr_name, attr in sorted(vars(member).items()):
                    if not attr_name.startswith("_") and inspect.isfunction(attr):
                        add(attr)
            elif inspect.isfunction(member):
                add(member)
    text = "\n\n".join(texts) + "\n"
    return text[:max_chars] if max_chars is not None else text


def onto_vocabulary(text: str, tokenizer, replacement: str = " ") -> tuple[str, Counter]:
    """(`text` with every character outside the tokenizer's vocabulary replaced by
    `replacement`, a Counter of the characters replaced). Tabs become 4 spaces first."""
    vocabulary = set(_vocabulary(tokenizer))
    if not isinstance(replacement, str) or len(replacement) != 1 or replacement not in vocabulary:
        raise ValueError(
            f"replacement must be one character of the vocabulary, got {replacement!r}"
        )
    text = text.replace("\t", "    ")
    replaced = Counter(c for c in text if c not in vocabulary)
    if replaced:
        text = "".join(c if c in vocabulary else replacement for c in text)
    return text, replaced


def domain_tokens(text: str, tokenizer, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) token ids of a domain's text, split as the corpus is (the last
    `val_fraction` is validation), as uint16 arrays."""
    ids = np.asarray(tokenizer.encode(text), dtype=np.uint16)
    train, val = train_val_split(ids, val_fraction)
    return np.ascontiguousarray(train), np.ascontiguousarray(val)


# --- Measuring a fine-tuning run -------------------------------------------------------


def file_bytes(paths: Path | str | Iterable[Path | str]) -> int:
    """Bytes on disk of a file, or of every file in a folder (recursively), or of several."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    total = 0
    for path in map(Path, paths):
        if path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        else:
            total += path.stat().st_size
    return total


# The columns of the comparison, in order: (key, heading, format).
COLUMNS = (
    ("run", "run", "{}"),
    ("trainable", "trained params", "{:,}"),
    ("trainable_share", "share", "{:.1%}"),
    ("saved_mb", "saved (MB)", "{:.3f}"),
    ("optimizer_state_mb", "optimizer state (MB)", "{:.3f}"),
    ("ms_per_iter", "ms/step", "{:.1f}"),
    ("new_val_loss", "val loss, new domain", "{:.4f}"),
    ("old_val_loss", "val loss, Shakespeare", "{:.4f}"),
)


def comparison_row(
    run: str,
    *,
    trainable: int,
    total: int,
    saved_bytes: int,
    optimizer_state_bytes: int,
    ms_per_iter: float,
    new_val_loss: float,
    old_val_loss: float,
) -> dict[str, Any]:
    """One row of the comparison: what a fine-tuning run trained, saved, kept in its
    optimizer, how fast it stepped, and its val loss on the new domain and the old one."""
    if total <= 0 or not 0 <= trainable <= total:
        raise ValueError(f"trainable ({trainable}) must be between 0 and total ({total}) > 0")
    return {
        "run": run,
        "trainable": int(trainable),
        "trainable_share": trainable / total,
        "saved_mb": saved_bytes / 1e6,
        "optimizer_state_mb": optimizer_state_bytes / 1e6,
        "ms_per_iter": float(ms_per_iter),
        "new_val_loss": float(new_val_loss),
        "old_val_loss": float(old_val_loss),
    }


def format_table(rows: Sequence[Mapping[str, Any]], columns=COLUMNS) -> str:
    """A plain-text table of `rows` (dicts) in `columns` ((key, heading, format)); a
    missing or None value is shown as '-'."""
    cells = [[heading for _, heading, _ in columns]]
    for row in rows:
        cells.append(
            [fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in columns]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                  enumerate(zip(line, widths, strict=True)))
        for line in cells
    ]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""Writing files so that a crash never leaves half of one: the course's one atomic writer.

Every file the course writes that a later run trusts (a downloaded corpus, token files,
a tokenizer, a checkpoint, metrics, grades.csv) goes through `replace_atomically`: the
bytes go to a temporary file beside the target, are synced to disk, and only then take
the target's name (`os.replace` is atomic on one file system). Readers see the old file
or the new one, never a mix; if writing fails, the old file is untouched and the
temporary file is removed.

Framework-neutral and cheap to import (standard library only).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["replace_atomically", "write_bytes", "write_text", "write_json"]


def replace_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temporary binary file beside ``path``, sync it, rename it
    to ``path``; return ``path``.

    If ``write`` raises (a failed download, a checksum that does not match, a full disk),
    the exception propagates, the temporary file is deleted and ``path`` keeps its old
    content. The parent folder is created if it is missing. The file gets the permissions
    of the file it replaces, or those a plain ``open(path, "w")`` would give (the umask's).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    part = tempfile.NamedTemporaryFile(
        delete=False, dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with part:
            write(part)
            part.flush()
            os.fchmod(part.fileno(), mode)  # a temporary file is made private (0600)
            os.fsync(part.fileno())  # the bytes are on disk before the file gets its name
        os.replace(part.name, path)
    finally:
        Path(part.name).unlink(missing_ok=True)  # only left if something failed
    return path


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, and put it back at once
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """``data`` at ``path``, atomically."""
    return replace_atomically(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """``text`` at ``path`` (UTF-8 by default), atomically."""
    return write_bytes(path, text.encode(encoding))


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN or Infinity: a value that was never measured is null.
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(path: str | os.PathLike[str], document: dict, **dumps_kwargs: Any) -> Path:
    """``document`` as indented JSON at ``path``, atomically. Top-level NaN and infinity
    become null (JSON has no such numbers). ``dumps_kwargs`` go to ``json.dumps``."""
    document = {key: _finite_or_none(value) for key, value in document.items()}
    dumps_kwargs.setdefault("indent", 1)
    return write_text(path, json.dumps(document, **dumps_kwargs) + "\n")

"""``release`` and ``check``: keep notebooks/ generated from solutions/, and prove it.

``check`` decides from nbgrader's ``Validator`` results, not from exit codes: ``nbgrader
validate`` exits 0 even when a notebook fails, and release notebooks trip its
"checksum changed" warning (their hidden tests were removed after the checksum was taken),
so the inverted validation must ignore checksums to see which cells pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import launch, notebooks
from .workspace import CONFIG, RELEASE, SOLUTIONS, CourseFolder, assignments, tool_env


def _release_files(folder: Path) -> dict[str, Path]:
    """The files of a release folder, leaving out Jupyter's hidden checkpoints and caches."""
    files = {}
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and not any(p.startswith(".") or p == "__pycache__" for p in parts):
            files[str(path.relative_to(folder))] = path
    return files


def _canonical_bytes(path: Path) -> bytes:
    if path.suffix == ".ipynb":
        return notebooks.dumps(notebooks.read(path)).encode("utf-8")
    return path.read_bytes()


def release(
    names: list[str] | None = None,
    log=print,
    solutions: Path = SOLUTIONS,
    release_dir: Path = RELEASE,
) -> list[Path]:
    """Sync the solution pairs, regenerate notebooks/ for ``names`` (all by default).

    Returns the files written or removed under ``release_dir``. First, the repository's
    address, the release tag and binder/ are written from pyproject.toml (``launch``).
    """
    launch.update(solutions, names, log=log)
    for nb in notebooks.sync(solutions, names):
        log(f"synced {nb.relative_to(solutions.parent)} from its .py source")
    names = names or assignments(solutions)
    touched: list[Path] = []
    with CourseFolder() as course:
        for name in names:
            course.add_source(name, solutions)
            fresh = _release_files(course.generate(name))
            target = release_dir / name
            old = _release_files(target) if target.is_dir() else {}
            for rel, path in fresh.items():
                dest = target / rel
                data = _canonical_bytes(path)
                if not dest.exists() or dest.read_bytes() != data:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(data)
                    touched.append(dest)
            for rel in sorted(set(old) - set(fresh)):
                old[rel].unlink()
                touched.append(old[rel])
    current = assignments(solutions)
    for stale in sorted(release_dir.glob("*/")):
        if stale.is_dir() and stale.name not in current and any(stale.glob("*.ipynb")):
            shutil.rmtree(stale)
            touched.append(stale)
    for path in touched:
        log(f"wrote {path.relative_to(release_dir.parent)}")
    return touched


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def validate(path: Path, invert: bool = False, timeout: int | None = None) -> dict:
    """nbgrader's Validator on one notebook, executed in smoke mode; returns its results."""
    from nbgrader.validator import Validator
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(str(CONFIG)).load_config()
    if timeout is not None:
        config.Execute.timeout = timeout
    validator = Validator(config=config, invert=invert, ignore_checksums=invert)
    with _environ(tool_env(smoke=True)):
        return validator.validate(str(path))


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(
    names: list[str] | None = None,
    execute: bool = True,
    log=print,
    solutions: Path = SOLUTIONS,
    release_dir: Path = RELEASE,
) -> CheckReport:
    """Everything ``python -m autograde check`` verifies; see the module docstring."""
    report = CheckReport()
    report.problems += notebooks.out_of_sync(solutions, names)
    names = names or assignments(solutions)
    with CourseFolder() as course:
        for name in names:
            log(f"[{name}] regenerating the release")
            course.add_source(name, solutions)
            fresh = _release_files(course.generate(name))
            target = release_dir / name
            on_disk = _release_files(target) if target.is_dir() else {}
            for rel in sorted(set(fresh) | set(on_disk)):
                if rel not in on_disk:
                    report.problems.append(f"{target / rel}: missing (run release)")
                elif rel not in fresh:
                    report.problems.append(f"{target / rel}: not in a fresh release")
                elif on_disk[rel].read_bytes() != _canonical_bytes(fresh[rel]):
                    report.problems.append(
                        f"{target / rel}: differs from a fresh release "
                        "(edit solutions/, then run `python -m autograde release`)"
                    )
            if not execute:
                continue
            for nb in sorted((course.root / "source" / name).glob("*.ipynb")):
                log(f"[{name}] validating the solution {nb.name}")
                result = validate(nb)
                for kind in ("failed", "type_changed", "changed"):
                    for cell in result.get(kind, []):
                        detail = cell.get("raw_error", "").strip().splitlines()[-1:]
                        report.problems.append(
                            f"{solutions / name / nb.name}: cell {kind}: "
                            f"{cell.get('source', '')[:80]!r} {' '.join(detail)}"
                        )
            for rel, path in fresh.items():
                if path.suffix != ".ipynb":
                    continue
                log(f"[{name}] checking that the release {rel} passes no graded test")
                for cell in validate(path, invert=True).get("passed", []):
                    report.problems.append(
                        f"{target / rel}: a graded test passes on the stub: {cell['source'][:80]!r}"
                    )
    return report

"""A throw-away nbgrader course folder, and running nbgrader in it.

nbgrader writes a gradebook, release copies and logs wherever its course root is. The
commands here never let it write into the repository: they copy what they need into a
temporary course folder (with its own SQLite gradebook), run nbgrader there as a
subprocess, and copy back only what the caller asked for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
RELEASE = REPO / "notebooks"
CONFIG = Path(__file__).resolve().with_name("nbgrader_config.py")
# The py:percent twin of a chapter notebook (NN_topic/NN_topic.py) holds its solutions:
# never released. Other .py files (helper modules a chapter imports) are.
TWIN_PATTERN = "[0-9][0-9]_*.py"


def assignments(source: Path = SOLUTIONS) -> list[str]:
    """Assignment names: the folders of ``source`` holding a notebook or a chapter script
    (``NN_topic/NN_topic.py``, which ``release`` turns into the notebook)."""
    return sorted(
        p.name
        for p in source.iterdir()
        if p.is_dir() and (any(p.glob("*.ipynb")) or (p / f"{p.name}.py").is_file())
    )


def tool_env(smoke: bool = True) -> dict[str, str]:
    """Environment for nbgrader and the kernels it starts.

    nbgrader shells out to ``alembic`` and ``jupyter``: the running Python's bin folder goes
    first on PATH. ``COURSE_SMOKE=1`` makes every chapter run at its small size.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    if smoke:
        env["COURSE_SMOKE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


@dataclass
class Result:
    returncode: int
    output: str
    timed_out: bool = False


def run(
    args: list[str],
    cwd: Path,
    timeout: float | None = None,
    smoke: bool = True,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``nbgrader ARGS`` (`autograde.nbgrader_app`) in ``cwd`` (``env`` added to its
    environment); on timeout kill its whole process group."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "autograde.nbgrader_app", *args],
        cwd=cwd,
        env={**tool_env(smoke), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group; kernels start their own: see kill_tree
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # an orphan still holds the pipe: stop reading
            out = ""
        return Result(-9, out + f"\n[killed after {timeout:.0f} s]", timed_out=True)
    except BaseException:  # Ctrl-C or any error here: leave no nbgrader or kernel behind
        kill_tree(proc)
        raise


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a process and every process it started (kernels run in sessions of their own)."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for member in [*family]:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class CourseFolder:
    """A temporary nbgrader course: ``source/``, ``release/``, ``submitted/``, gradebook.

    Use as a context manager; the folder is deleted on exit unless ``keep=True``.
    """

    def __init__(
        self,
        keep: bool = False,
        exec_timeout: int | None = None,
        db_url: str | None = None,
        extra_config: list[str] | tuple[str, ...] = (),
    ):
        self.root = Path(tempfile.mkdtemp(prefix="twin-gpt-course-"))  # mode 0700
        self.keep = keep
        self.db_path = self.root / "gradebook.db"
        self.db_url = db_url or f"sqlite:///{self.db_path}"
        lines = [
            f"load_subconfig({str(CONFIG)!r})",
            "c = get_config()",
            f"c.CourseDirectory.root = {str(self.root)!r}",
            "c.CourseDirectory.source_directory = 'source'",
            "c.CourseDirectory.release_directory = 'release'",
            f"c.CourseDirectory.db_url = {self.db_url!r}",
        ]
        if exec_timeout is not None:
            lines.append(f"c.Execute.timeout = {int(exec_timeout)}")
        lines += list(extra_config)
        (self.root / "nbgrader_config.py").write_text("\n".join(lines) + "\n")

    def __enter__(self) -> CourseFolder:
        return self

    def __exit__(self, *exc) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def add_source(self, assignment: str, source: Path = SOLUTIONS) -> None:
        """Copy an assignment's source folder in, leaving out its py:percent twin."""
        if not (source / assignment).is_dir():
            known = ", ".join(assignments(source)) or "none"
            raise ValueError(f"no assignment {assignment!r} in {source} (known: {known})")
        shutil.copytree(
            source / assignment,
            self.root / "source" / assignment,
            ignore=shutil.ignore_patterns(TWIN_PATTERN, "__pycache__", ".*"),
        )

    def generate(self, assignment: str) -> Path:
        """``nbgrader generate_assignment``: fills the gradebook, returns the release folder."""
        result = run(["generate_assignment", assignment, "--force"], cwd=self.root)
        released = self.root / "release" / assignment
        if result.returncode != 0 or not released.is_dir():
            raise RuntimeError(
                f"nbgrader generate_assignment {assignment} failed:\n{result.output[-4000:]}"
            )
        return released

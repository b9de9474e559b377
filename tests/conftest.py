"""Shared fixtures: the repository's folders and a tiny framework-free course to grade."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest

from course import runtime

REPO = Path(__file__).resolve().parent.parent

# The corpus comes from ../shared/data when it is there (CI, the course's machines), never
# from the network; .ci/run exports the same. Chapters executed by tests inherit it.
_SHARED_DATA = REPO.parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("COURSE_DATA_DIR", str(_SHARED_DATA))

# Token files and downloads that tests and the chapters they execute cache go to a folder of
# this test process, removed at its end: never into the user's ~/.cache.
if not os.environ.get("COURSE_CACHE_DIR"):
    _CACHE = tempfile.mkdtemp(prefix="twin-gpt-test-cache-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["COURSE_CACHE_DIR"] = _CACHE

# `make test` runs its workers side by side: each of them, and every kernel, rank and trainer
# it starts, takes its share of the cores (runtime.set_threads(0) keeps under the cap), not
# every core. Processes that each took every core were measured 10 times slower: their
# threads spin against each other.
_WORKERS = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
if _WORKERS.isdigit() and int(_WORKERS) > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, runtime._usable_cpus() // int(_WORKERS)))

# The folder holding the real corpus for the tests that need it (read before any test
# edits the environment), and the mark that skips them, saying why, where it is missing.
SHARED_DATA_DIR = next(
    (
        folder
        for folder in [Path(os.environ.get("COURSE_DATA_DIR") or _SHARED_DATA), _SHARED_DATA]
        if (folder / "tinyshakespeare.txt").is_file()
    ),
    None,
)
needs_shared_corpus = pytest.mark.skipif(
    SHARED_DATA_DIR is None,
    reason="no tinyshakespeare.txt in $COURSE_DATA_DIR nor in ../shared/data",
)

# The test process's Triton policy, applied once: Triton is loaded before any test imports
# TensorFlow (the other order aborts the process once torch.optim or torch.compile loads
# Triton: both bundle LLVM), and without a GPU its kernels run in its interpreter.
runtime.use_triton(required=False)

# A two-exercise assignment with no framework in it: kernels start in about a second, so
# the pipeline's failure modes (broken JSON, endless loops, tampering) are cheap to test.
TOY_SCRIPT = """\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
SMOKE = True

# %% nbgrader={"grade": false, "grade_id": "add", "locked": false, "schema_version": 3, "solution": true, "task": false}
def add(a, b):
    ### BEGIN SOLUTION
    return a + b
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_add", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
assert add(2, 3) == 5, "add(2, 3) should be 5"
### BEGIN HIDDEN TESTS
assert add(-1, 1) == 0
### END HIDDEN TESTS

# %% nbgrader={"grade": false, "grade_id": "mul", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mul(a, b):
    ### BEGIN SOLUTION
    return a * b
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_mul", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
assert mul(2, 3) == 6, "mul(2, 3) should be 6"
### BEGIN HIDDEN TESTS
assert mul(-2, 4) == -8
### END HIDDEN TESTS
"""

TOY = "99_toy"


def write_toy(solutions: Path, script: str = TOY_SCRIPT) -> Path:
    """Write the toy assignment's script and its notebook under ``solutions``."""
    from autograde import notebooks

    folder = solutions / TOY
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TOY}.py").write_text(script)
    notebooks.sync(solutions)
    return folder / f"{TOY}.ipynb"


@pytest.fixture(scope="session")
def _toy_pristine(tmp_path_factory):
    from autograde.release import release

    root = tmp_path_factory.mktemp("toy")
    write_toy(root / "solutions")
    release(solutions=root / "solutions", release_dir=root / "notebooks", log=lambda msg: None)
    return root


@pytest.fixture
def toy_course(_toy_pristine, tmp_path):
    """(solutions, release) folders of a fresh copy of a course holding only the toy."""
    for name in ("solutions", "notebooks"):
        shutil.copytree(_toy_pristine / name, tmp_path / name)
    return tmp_path / "solutions", tmp_path / "notebooks"


def edit_cell(path: Path, grade_id: str, source: str, dest: Path | None = None) -> Path:
    """Copy a notebook to ``dest`` (default: in place) with one cell's source replaced."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
            cell["source"] = textwrap.dedent(source)
            break
    else:
        raise KeyError(f"no cell {grade_id!r} in {path}")
    dest = dest or path
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb))
    return dest


def pytest_collection_modifyitems(config, items):
    """Slow tests first, those allowed the longest time (a `timeout` mark) first of all;
    the rest after, in file order.

    `make test` runs two workers that take tests as they go: started first, the long
    notebook and grading runs overlap each other instead of leaving one worker alone
    with the last of them while the other idles.
    """

    def rank(item) -> float:
        if item.get_closest_marker("slow") is None:
            return 0.0
        timeout = item.get_closest_marker("timeout")
        return -(float(timeout.args[0]) if timeout and timeout.args else 1.0)

    items.sort(key=rank)  # stable: equal ranks keep their order


def run_script(code: str, folder: Path, *, cwd: Path | None = None, path_first: Path | None = None):
    """Run `code` as a script file in a fresh interpreter, as a learner's process starts
    (TRITON_INTERPRET not decided yet); `path_first` goes first on its sys.path.

    A file, not `python -c`: `@triton.jit` reads its function's source.
    """
    import subprocess
    import sys

    script = folder / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if path_first is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path_first), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd or folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


class _LiveScript(HTMLParser):
    """Student script that a browser would run on a page: ``alert`` in a script element,
    on* handlers, javascript: URLs (escaped text showing them is harmless)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        for name, value in attrs:
            url = re.sub(r"[\x00-\x20]+", "", value or "").lower()
            if name.startswith("on") or url.startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_data(self, data):
        if self._tag == "script" and "alert(" in data:
            self.found.append(f"<script>{data}")


def live_script(page: str) -> list[str]:
    """What on an HTML page a browser would run of a student's script (see _LiveScript)."""
    parser = _LiveScript()
    parser.feed(page)
    return parser.found

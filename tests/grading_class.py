"""A generated class of submissions: honest, wrong, broken and hostile, with the row each
one must get.

``make_class`` writes ``<dest>/<student>/<assignment>/<assignment>.ipynb`` for a class of
``size`` students and returns ``{student_id: (score, status)}``. Answers are the solution
notebook's solution cells (the ``### BEGIN/END SOLUTION`` lines dropped) copied into the
release notebook by grade id, so every submission keeps the release's cell metadata.

Hostile payloads are bounded, so that a grader missing a limit fails a test instead of
taking the machine down: the memory bomb writes at most ~4 GB in 100 MB chunks (and frees
them when refused); the fork bomb forks at most 300 children that each sleep at most 30 s
and leave with ``os._exit(0)``, and kills and reaps them all once it stops forking (left
sleeping, they would hold the process limit and the kernel would die in the next cell
that starts a thread: the row would say kernel-died); endless loops are ``while True:
pass`` (the grader's cell timeout stops them); the huge output is ~20 MB of text; the fork
loop's chain ends by itself within 15 s and 3000 generations; and the
only network address tried is 127.0.0.1 on the port of a `ConnectionCounter` the caller
starts.

Cells that probe the sandbox print ``LEAKED <what>`` when an attempt succeeds and
``refused <what>`` when it fails. Both words are put together at run time, so they appear
in a feedback page or a log only as output, never as the cell's source.

The same arguments always give the same files.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
from pathlib import Path

import nbformat

FULL_CLASS = 40
# Kinds every class starts with, cheapest first (a small class is a prefix of this list).
CORE_KINDS = (
    "correct",
    "stub",
    "partial_1",  # the first exercise answered
    "partial_2",  # the first two exercises answered
    "invalid_json",
    "edited_test",
    "deleted_test",
    "duplicated_solution",
    "endless_loop",
    "memory_bomb",
    "fork_bomb",
    "os_exit",
    "huge_output",
    "snoop",
    "vandal",
    "network",
    "symlink",  # the notebook handed in is a link to the solution
    "tamper",  # an AST transformer takes every assert out: tests cannot fail
    "xss",  # a script and an event handler in markdown and in an HTML output
    "fork_loop",  # a process that forks and exits, over and over, left behind
)
# What fills a class up to its size, in turn.
FILLER_KINDS = ("correct", "stub", "partial_1", "partial_2")
# Extra answer sets for assignments whose test cells each need only their own exercise:
# kind -> ({solution grade_id: answer, None for the solution}, expected score); the other
# exercises keep their stubs.
_UNSTABLE_SOFTMAX = '''\
def softmax_numpy(x, axis=-1):
    """Softmax of the array ``x`` along ``axis``, stable for large values."""
    exp = np.exp(np.asarray(x))  # no shift by the max: inf / inf for large logits
    return exp / exp.sum(axis=axis, keepdims=True)
'''
EXTRA_ANSWERS: dict[str, dict[str, tuple[dict[str, str | None], float]]] = {
    "00_setup": {
        "only_torch": ({"softmax_torch": None}, 2.0),
        "only_tf": ({"softmax_tf": None}, 2.0),
        "numpy_tf": ({"softmax_numpy": None, "softmax_tf": None}, 4.0),
        "torch_tf": ({"softmax_torch": None, "softmax_tf": None}, 4.0),
        # Passes the visible numpy test, fails the hidden one (logits near 1000).
        "unstable_numpy": (
            {"softmax_numpy": _UNSTABLE_SOFTMAX, "softmax_torch": None, "softmax_tf": None},
            4.0,
        ),
    },
}
EXTRA_FILLERS = {"00_setup": ("correct", *EXTRA_ANSWERS["00_setup"], "stub", "partial_1")}

_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")

# Shared by the probing cells: the two words, assembled at run time.
_WORDS = '_SAID = {True: "LEAK" + "ED", False: "re" + "fused"}\n'

_MEMORY_BOMB = """\
def _hog(total_mb=4000, chunk_mb=500):
    # Asked for, not written: the address-space limit refuses it in milliseconds, however
    # loaded the machine is (writing 4 GB first raced the 10 s cell timeout at load 6).
    held = []
    try:
        for _ in range(total_mb // chunk_mb):
            held.append(bytearray(chunk_mb << 20))
    finally:
        held.clear()
    return total_mb


print("held", _hog(), "MB")
"""

_FORK_BOMB = """\
import os
import signal
import time

_children = []
try:
    for _ in range(300):
        _pid = os.fork()
        if _pid == 0:
            try:
                time.sleep(30)
            finally:
                os._exit(0)
        _children.append(_pid)
finally:  # refused or not, the sleepers go: the kernel needs its process slots back
    for _pid in _children:
        os.kill(_pid, signal.SIGKILL)
        os.waitpid(_pid, 0)
print("forked", len(_children), "children")
"""

_HUGE_OUTPUT = """\
for _line in range(20_000):
    print(f"{_line:07d} " + "y" * 991)  # 1000 bytes a line, ~20 MB in all
"""

_TAMPER = """\
import ast


class _NoAsserts(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()


get_ipython().ast_transformers.append(_NoAsserts())
"""

_XSS_MARKDOWN = (
    "Hello <script>alert('xss-markdown')</script> <img src=x onerror=alert(1)> "
    "[click](javascript:alert(2))"
)
_XSS_OUTPUT = """\
from IPython.display import HTML, display

display(HTML("<b>bold</b><script>alert('xss-output')</script><img src=x onerror=alert(3)>"))
"""

_FORK_LOOP = """\
import os
import time

if os.fork() == 0:  # a chain: each process forks a child and leaves; at most ~15 s
    os.setsid()
    deadline = time.monotonic() + 15
    for _ in range(3000):
        if time.monotonic() > deadline or os.fork() != 0:
            os._exit(0)
        time.sleep(0.005)
    os._exit(0)
"""

_SNOOP = (
    _WORDS
    + """\
import os
import time


def _read(path):
    try:
        with open(path, "rb") as fh:
            fh.read(256)
        ok = True
    except Exception:  # missing, denied, hidden: all the same here
        ok = False
    print(_SAID[ok], path)


def _find(root, max_entries=20_000, max_found=300, seconds=3.0):
    \"\"\"gradebook.db and source/**/*.ipynb under root, breadth first, within bounds.\"\"\"
    deadline, found, queue = time.monotonic() + seconds, [], [root]
    while queue and max_entries > 0 and len(found) < max_found:
        if time.monotonic() > deadline:
            break
        folder = queue.pop(0)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except Exception:
            continue
        for entry in entries:
            max_entries -= 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    queue.append(entry.path)
                elif entry.name == "gradebook.db" or (
                    entry.name.endswith(".ipynb") and "/source/" in entry.path
                ):
                    found.append(entry.path)
            except Exception:
                pass
    return found[:max_found]


for _path in PATHS:
    _read(_path)
for _path in _find("/tmp"):
    _read(_path)
"""
)

_VANDAL = (
    _WORDS
    + """\
import os
import pathlib
import sqlite3


def _attempt(what, path, action):
    try:
        action(path)
        ok = True
    except Exception:
        ok = False
    print(_SAID[ok], what, path)


def _open_for_writing(path):
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # no O_CREAT: only what is there


def _delete_grades(path):
    uri = pathlib.Path(path).absolute().as_uri() + "?mode=rw"  # never creates a file
    con = sqlite3.connect(uri, uri=True, timeout=2)
    try:
        con.execute("DELETE FROM grade")
        con.commit()
    finally:
        con.close()


for _path in PATHS:
    _attempt("open for writing", _path, _open_for_writing)
    _attempt("DELETE FROM grade in", _path, _delete_grades)
    _attempt("remove", _path, os.remove)
"""
)

_NETWORK = (
    _WORDS
    + """\
import socket

try:
    with socket.create_connection(("127.0.0.1", PORT), timeout=2) as _conn:
        _conn.sendall(b"student")
    _ok = True
except Exception:
    _ok = False
print(_SAID[_ok], "connect to 127.0.0.1 port", PORT)
"""
)


def _answer(source: str) -> str:
    """A solution cell's source as a student would hand it in: no solution markers."""
    lines = [line for line in source.splitlines() if line.strip() not in _MARKERS]
    return "\n".join(lines)


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _index(nb, grade_id: str) -> int:
    for i, cell in enumerate(nb.cells):
        if _grade_id(cell) == grade_id:
            return i
    raise KeyError(f"no cell {grade_id!r}")


def _new_cell(source: str, cell_id: str):
    cell = nbformat.v4.new_code_cell(source)
    cell.id = cell_id
    return cell


class _Chapter:
    """One assignment's release notebook, its answers and its graded cells."""

    def __init__(self, assignment: str, solutions: Path, release: Path):
        self.assignment = assignment
        self.solution_path = solutions / assignment / f"{assignment}.ipynb"
        self.release = nbformat.read(
            str(release / assignment / f"{assignment}.ipynb"), as_version=4
        )
        source = nbformat.read(str(self.solution_path), as_version=4)
        self.answers = {
            _grade_id(cell): _answer(cell.source)
            for cell in source.cells
            if cell.metadata.get("nbgrader", {}).get("solution")
        }
        meta = [(i, c.metadata.get("nbgrader", {})) for i, c in enumerate(self.release.cells)]
        self.solution_ids = [m["grade_id"] for _, m in meta if m.get("solution")]
        self.tests = [(i, m["grade_id"], float(m["points"])) for i, m in meta if m.get("grade")]
        missing = set(self.solution_ids) - set(self.answers)
        if missing or not self.solution_ids or not self.tests:
            raise ValueError(f"{assignment}: release and solutions disagree ({missing or 'empty'})")
        self.max_score = sum(points for _, _, points in self.tests)

    def notebook(self, answers: dict[str, str | None]):
        """The release with ``answers`` (grade_id -> source, None: the solution) filled in."""
        nb = copy.deepcopy(self.release)
        for cell in nb.cells:
            gid = _grade_id(cell)
            if gid in answers:
                cell.source = self.answers[gid] if answers[gid] is None else answers[gid]
        return nb

    def solved(self):
        return self.notebook(dict.fromkeys(self.solution_ids))

    def prefix_score(self, k: int) -> float:
        """Points of the test cells above the (k+1)-th exercise: up to there, a notebook
        with only the first k exercises answered is the solution itself."""
        if k >= len(self.solution_ids):
            return self.max_score
        stop = _index(self.release, self.solution_ids[k])
        return sum(points for i, _, points in self.tests if i < stop)


def kinds_for(assignment: str, size: int) -> list[str]:
    """The kind of each of ``size`` students, in order."""
    if size < 1:
        raise ValueError(f"a class has at least one student, not {size}")
    fillers = EXTRA_FILLERS.get(assignment, FILLER_KINDS)
    kinds = list(CORE_KINDS[:size])
    while len(kinds) < size:
        kinds.append(fillers[(len(kinds) - len(CORE_KINDS)) % len(fillers)])
    return kinds


def _build(kind: str, ch: _Chapter, *, solutions: Path, gradebook: Path, port: int):
    """(notebook, or the bytes of a broken file; expected (score, status))."""
    first = ch.solution_ids[0]
    assignment = ch.assignment
    if kind == "correct":
        return ch.solved(), (ch.max_score, "ok")
    if kind == "stub":
        return ch.notebook({}), (0.0, "ok")
    if kind.startswith("partial_"):
        k = int(kind.removeprefix("partial_"))
        answered = dict.fromkeys(ch.solution_ids[:k])
        return ch.notebook(answered), (ch.prefix_score(k), "ok")
    extra = EXTRA_ANSWERS.get(assignment, {})
    if kind in extra:
        answers, score = extra[kind]
        return ch.notebook(answers), (score, "ok")
    if kind == "invalid_json":
        text = nbformat.writes(ch.solved())
        return text[: len(text) // 2].encode(), (0.0, "invalid-notebook")

    nb = ch.solved()
    if kind == "edited_test":
        nb.cells[ch.tests[0][0]].source = "pass"
        return nb, (0.0, "test-cell-changed")
    if kind == "deleted_test":
        del nb.cells[ch.tests[-1][0]]
        return nb, (0.0, "missing-cell")
    if kind == "duplicated_solution":
        at = _index(nb, first)
        twin = copy.deepcopy(nb.cells[at])
        twin.id = f"{first}-copy"
        nb.cells.insert(at + 1, twin)
        return nb, (0.0, "duplicated-cell")

    if kind == "symlink":
        return ch.solution_path, (0.0, "refused-file")  # make_class links to it
    if kind == "tamper":
        nb.cells.insert(_index(nb, first), _new_cell(_TAMPER, "extra-tamper"))
        return nb, (0.0, "tampered")
    if kind == "xss":
        at = _index(nb, first)
        nb.cells.insert(at, _new_cell(_XSS_OUTPUT, "extra-xss-output"))
        nb.cells.insert(at, nbformat.v4.new_markdown_cell(_XSS_MARKDOWN, id="extra-xss-md"))
        return nb, (ch.max_score, "ok")
    if kind == "fork_loop":
        nb.cells.insert(_index(nb, first) + 1, _new_cell(_FORK_LOOP, "extra-fork-loop"))
        return nb, (ch.max_score, "ok")

    # Payloads that run before the first answer, in its own cell.
    payloads = {
        "endless_loop": ("while True:\n    pass\n", "timeout"),
        "memory_bomb": (_MEMORY_BOMB, "memory-limit"),
        "fork_bomb": (_FORK_BOMB, "process-limit"),
        "os_exit": ("import os\n\nos._exit(1)\n", "kernel-died"),
    }
    if kind in payloads:
        payload, status = payloads[kind]
        cell = nb.cells[_index(nb, first)]
        cell.source = payload + "\n\n" + cell.source
        return nb, (0.0, status)

    # New ungraded cells in an otherwise correct notebook: graded as usual.
    paths = {
        "snoop": [
            *(
                f"{up}/{name}"
                for up in ("..", "../..", "../../..")
                for name in (f"source/{assignment}/{assignment}.ipynb", "gradebook.db")
            ),
            str(ch.solution_path),
            str(solutions / assignment / f"{assignment}.py"),
            str(gradebook),
        ],
        "vandal": [str(gradebook), "../../../gradebook.db"],
    }
    if kind == "huge_output":  # past the grader's output cap: cut, and the row says so
        nb.cells.insert(_index(nb, first) + 1, _new_cell(_HUGE_OUTPUT, "extra-huge-output"))
        return nb, (0.0, "output-limit")
    if kind in paths:
        template = _SNOOP if kind == "snoop" else _VANDAL
        source = f"PATHS = {json.dumps(paths[kind], indent=4)}\n{template}"
        nb.cells.append(_new_cell(source, f"extra-{kind}"))
    elif kind == "network":
        nb.cells.append(_new_cell(f"PORT = {int(port)}\n{_NETWORK}", "extra-network"))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return nb, (ch.max_score, "ok")


def make_class(
    dest: Path,
    *,
    assignment: str = "00_setup",
    solutions: Path,
    release: Path,
    gradebook: Path,
    port: int,
    size: int = FULL_CLASS,
) -> dict[str, tuple[float, str]]:
    """Write a class of ``size`` submissions of ``assignment`` under ``dest``; return
    student id -> (expected score, expected status).

    ``gradebook`` is the path the grader will write its gradebook to (the vandal and the
    snoop go after it); ``port`` is where the network cell knocks (a `ConnectionCounter`).
    Student ids are ``sNN_<kind>``.
    """
    dest, solutions, release = Path(dest), Path(solutions), Path(release)
    chapter = _Chapter(assignment, solutions, release)
    expected: dict[str, tuple[float, str]] = {}
    for number, kind in enumerate(kinds_for(assignment, size), start=1):
        student = f"s{number:02d}_{kind}"
        nb, expected[student] = _build(
            kind, chapter, solutions=solutions, gradebook=Path(gradebook), port=port
        )
        path = dest / student / assignment / f"{assignment}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(nb, Path):  # a link to the instructor's notebook, not a notebook
            path.symlink_to(nb)
        elif isinstance(nb, bytes):
            path.write_bytes(nb)
        else:
            path.write_text(nbformat.writes(nb) + "\n")
    return expected


class ConnectionCounter:
    """A TCP server on 127.0.0.1 that only counts who connects (and keeps their first
    bytes). Use as a context manager; ``port`` and ``count`` are read from outside."""

    def __init__(self) -> None:
        self.port = 0
        self.count = 0
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ConnectionCounter:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="connection-counter")
        self._thread.daemon = True
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            with conn:
                with self._lock:
                    self.count += 1
                conn.settimeout(1.0)
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                with self._lock:
                    self.received.append(data)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

"""Grading untrusted notebooks: the sandbox, statuses, resuming, roster and lateness.

These run the toy assignment (no framework: a kernel starts in about a second). The
class of 40 hostile submissions for the real chapters is in test_grading_class.py.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import REPO, TOY, edit_cell
from postgres import postgres_url_fixture  # noqa: F401  (the `postgres_url` fixture)

from autograde import forkserver, sandbox, submission
from autograde.grade import grade
from autograde.gradebook import read_roster
from autograde.grades import FIELDS

QUIET = {"log": lambda msg: None}
ISOLATION = sandbox.isolation()
needs_isolation = pytest.mark.skipif(
    not all(ISOLATION.values()),
    reason=f"this machine does not allow the full sandbox (not root, or no namespaces): "
    f"{ISOLATION}",
)


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "grades.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and tuple(rows[0]) == FIELDS
    keys = [r["student_id"] for r in rows]
    assert len(keys) == len(set(keys)), f"a student has two rows: {keys}"
    return {r["student_id"]: r for r in rows}


def _submit(subs: Path, student: str, nb: Path) -> Path:
    dest = subs / student / TOY / f"{TOY}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(nb, dest)
    return dest


def _answer(release_nb: Path, dest: Path, add: str, mul: str = "") -> Path:
    """The release notebook with `add` (and `mul`) answered by the given code."""
    edit_cell(release_nb, "add", textwrap.dedent(add), dest)
    return edit_cell(dest, "mul", mul or "def mul(a, b):\n    return a * b\n")


ADD = "def add(a, b):\n    return a + b\n"


class _Listener:
    """A TCP server on 127.0.0.1 that counts connections (the network a kernel must not
    reach); bounded: it stops on close."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port, self.count, self._stop = self.sock.getsockname()[1], 0, False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self):
        self._stop = True
        self.thread.join(5)
        self.sock.close()


# --- checks before running ----------------------------------------------------------------


def test_structure_problems_are_named(toy_course, tmp_path):
    solutions, release_dir = toy_course
    release_nb = nbformat.read(release_dir / TOY / f"{TOY}.ipynb", as_version=4)
    source_nb = nbformat.read(solutions / TOY / f"{TOY}.ipynb", as_version=4)
    assert submission.structure_problem(release_nb, release_nb) is None
    # The instructor's notebook (hidden tests included) counts as unchanged.
    assert submission.structure_problem(source_nb, release_nb) is None

    gone = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    gone.cells = [
        c for c in gone.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_mul"
    ]
    assert submission.structure_problem(gone, release_nb) == (
        "missing-cell",
        "cell(s) test_mul removed",
    )

    twice = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    add_cell = next(
        c for c in twice.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "add"
    )
    twice.cells.append(nbformat.from_dict(json.loads(json.dumps(add_cell))))
    assert submission.structure_problem(twice, release_nb)[0] == "duplicated-cell"

    edited = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    test_cell = next(
        c for c in edited.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_add"
    )
    test_cell.source = test_cell.source + "\n# a comment"
    assert submission.structure_problem(edited, release_nb) == (
        "test-cell-changed",
        "test cell test_add was edited",
    )
    test_cell.source = test_cell.source.replace("\n# a comment", "   \n")  # whitespace only
    assert submission.structure_problem(edited, release_nb) is None


def test_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="memory_mb"):
        sandbox.Limits(memory_mb=0)
    with pytest.raises(ValueError, match="processes"):
        sandbox.Limits(processes="many")


@pytest.mark.parametrize(
    ("option", "value"),
    [("workers", -1), ("workers", 1.5), ("timeout", 0), ("cell_timeout", -5)],
)
def test_grade_options_refuse_nonsense_before_grading(toy_course, tmp_path, option, value):
    solutions, release_dir = toy_course
    subs, out = tmp_path / "subs", tmp_path / "out"
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    with pytest.raises(ValueError, match=f"^{option} must be a positive"):
        grade(subs, out, solutions=solutions, **{option: value}, **QUIET)
    assert not (out / "grades.csv").exists() and not (out / "gradebook.db").exists()


# --- the sandbox --------------------------------------------------------------------------


# Kernels start on their own, or forked by the worker's fork server (here preloading only
# numpy, to stay fast; test_grading_class.py grades a whole class through the full preload).
KERNEL_STARTS = [
    pytest.param(False, id="unaided"),
    pytest.param(("numpy",), id="fork-server"),
]


@needs_isolation
@pytest.mark.parametrize("preload", KERNEL_STARTS)
def test_a_student_reaches_no_instructor_file_no_network_and_no_gradebook(
    toy_course, tmp_path, preload
):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    out, subs = tmp_path / "out", tmp_path / "subs"
    listener = _Listener()
    secret_source = solutions / TOY / f"{TOY}.ipynb"
    targets = [
        str(secret_source),
        str(REPO / "solutions" / "00_setup" / "00_setup.ipynb"),
        str(out / "gradebook.db"),
        "../../../source/99_toy/99_toy.ipynb",
        "../source/99_toy/99_toy.ipynb",
        str(Path.home() / ".bashrc"),
    ]
    snoop = f"""
        import os, socket, sqlite3
        for path in {targets!r}:
            try:
                with open(path, "rb") as fh:
                    fh.read(100)
                print("READ-OK", path)
            except Exception as err:
                print("refused", path, type(err).__name__)
        try:
            with open({str(out / "gradebook.db")!r}, "ab") as fh:
                fh.write(b"vandal")
            print("WRITE-OK")
        except Exception as err:
            print("refused write", type(err).__name__)
        try:
            db = sqlite3.connect({str(out / "gradebook.db")!r})
            db.execute("DELETE FROM grade"); db.commit()
            print("DELETE-OK")
        except Exception as err:
            print("refused sqlite", type(err).__name__)
        try:
            socket.create_connection(("127.0.0.1", {listener.port}), timeout=2).send(b"hi")
            print("CONNECT-OK")
        except Exception as err:
            print("refused network", type(err).__name__)
        print("secrets", sorted(k for k in os.environ if "SECRET" in k), os.getuid())
        # Its own loopback works (distributed training's ranks meet on 127.0.0.1): a
        # network of one, with no route out.
        import threading
        try:
            echo = socket.create_server(("127.0.0.1", 0))
            threading.Thread(target=lambda: echo.accept()[0].sendall(b"pong"), daemon=True).start()
            with socket.create_connection(("127.0.0.1", echo.getsockname()[1]), timeout=5) as c:
                print("loopback", c.recv(4).decode())
        except Exception as err:
            print("no loopback", type(err).__name__, err)
        # The process that started this kernel (a fork server, maybe) is out of reach too:
        # the kernel is PID 1 of a PID namespace of its own, its parent outside, unseen.
        import sys
        print("pid", os.getpid(), "parent", os.getppid(), "preloaded", "numpy" in sys.modules)
        server = os.path.join(os.path.dirname(os.getcwd()), "fork-server")
        try:
            socket.socket(socket.AF_UNIX).connect(server)
            print("PARENT-OK server")
        except Exception as err:
            print("refused parent server", type(err).__name__)
    """
    notebook = _answer(release_nb, tmp_path / "snoop.ipynb", ADD + textwrap.dedent(snoop))
    _submit(subs, "mallory", notebook)
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    os.environ["GRADER_SECRET_TOKEN"] = "s3cr3t"
    try:
        grade(
            subs, out, cell_timeout=30, timeout=120, solutions=solutions, preload=preload,
            **QUIET,
        )  # fmt: skip
    finally:
        del os.environ["GRADER_SECRET_TOKEN"]
        listener.close()
    rows = _rows(out)
    assert (rows["mallory"]["score"], rows["mallory"]["status"]) == ("3.0", "ok"), rows
    assert (rows["alice"]["score"], rows["alice"]["status"]) == ("3.0", "ok"), rows
    graded = nbformat.read(out / "autograded" / "mallory" / TOY / f"{TOY}.ipynb", as_version=4)
    printed = "".join(
        o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.outputs
    )
    for target in targets:
        assert f"refused {target}" in printed, printed
    for leak in ("READ-OK", "WRITE-OK", "DELETE-OK", "CONNECT-OK", "PARENT-OK", "s3cr3t",
                 "SECRET"):  # fmt: skip
        assert leak not in printed.replace("secrets []", ""), printed
    assert "refused write" in printed and "refused sqlite" in printed, printed
    assert "refused network" in printed and listener.count == 0
    assert "loopback pong" in printed, printed
    assert f"secrets [] {os.getuid()}" not in printed  # another user ran the kernel
    assert "refused parent server" in printed and "pid 1 parent 0 " in printed, printed
    forked = "preloaded True" in printed
    assert forked == bool(preload), printed  # each way of starting a kernel was the one used
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:  # intact, both scores there
        assert gb.find_submission(TOY, "alice").score == 3.0
        assert gb.find_submission(TOY, "mallory").score == 3.0


def test_the_scratch_folder_leaves_room_for_the_kernel_sockets(monkeypatch, tmp_path):
    deep = tmp_path / ("x" * 80)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    parent = sandbox.scratch_parent(3)
    try:
        socket_path = parent / "work" / ".ipc-65535"
        assert len(str(socket_path)) <= 107 and not parent.is_relative_to(deep), parent
        assert parent.name.startswith("twin-gpt-sandbox-3-")
        assert parent.stat().st_mode & 0o777 == 0o711  # entered, not listed
    finally:
        parent.rmdir()
    short = Path(tempfile.mkdtemp(prefix="s-", dir="/tmp"))  # tmp_path may be too long
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(short))  # short enough: used
        parent = sandbox.scratch_parent(0)
        assert parent.parent == short
        parent.rmdir()
    finally:
        short.rmdir()


@needs_isolation
def test_a_scratch_folder_inside_closed_folders_is_reached_and_nothing_beside_it(
    toy_course, tmp_path, monkeypatch
):
    # The grader's temporary folder sits in folders only their owner may enter (like a
    # 0700 TMPDIR): the kernel still starts there, and sees only its own way down.
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    closed = Path(tempfile.mkdtemp(prefix="tg-closed-", dir="/tmp"))  # short: socket paths
    try:
        (closed / "in").mkdir(mode=0o700)
        (closed / "in" / "beside.txt").write_text("instructor notes")
        (closed / "beside.txt").write_text("instructor notes")
        monkeypatch.setattr(tempfile, "tempdir", str(closed / "in"))
        snoop = f"""
            import os
            for path in {[str(closed / "in" / "beside.txt"), str(closed / "beside.txt")]!r}:
                try:
                    open(path).read()
                    print("READ-OK", path)
                except OSError as err:
                    print("refused", type(err).__name__)
            print("listing", sorted(os.listdir({str(closed / "in")!r})))
        """
        subs, out = tmp_path / "subs", tmp_path / "out"
        notebook = _answer(release_nb, tmp_path / "s.ipynb", ADD + textwrap.dedent(snoop))
        _submit(subs, "mallory", notebook)
        grade(subs, out, cell_timeout=30, timeout=120, solutions=solutions, **QUIET)
    finally:
        shutil.rmtree(closed)
    rows = _rows(out)
    assert (rows["mallory"]["score"], rows["mallory"]["status"]) == ("3.0", "ok"), rows
    graded = nbformat.read(out / "autograded" / "mallory" / TOY / f"{TOY}.ipynb", as_version=4)
    printed = "".join(
        o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "READ-OK" not in printed and printed.count("refused") == 2, printed
    listing = printed.split("listing ")[1].splitlines()[0]
    assert "beside.txt" not in listing and "twin-gpt-sandbox-" in listing, printed


@needs_isolation
@pytest.mark.parametrize("preload", KERNEL_STARTS)
def test_an_endless_loop_is_interrupted_and_the_kernel_goes_on(toy_course, tmp_path, preload):
    """The cell timeout interrupts the kernel (jupyter_client: SIGINT to the launcher's
    process group) and the kernel lives on: the row says timeout, not kernel-died, however
    the kernel was started. (Unaided, the launcher had become bubblewrap, which died of the
    interrupt and took the kernel with it.)"""
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs, out = tmp_path / "subs", tmp_path / "out"
    looping = "while True:\n    pass\n"
    _submit(subs, "loop", _answer(release_nb, tmp_path / "l.ipynb", looping + ADD))
    grade(subs, out, cell_timeout=5, timeout=120, solutions=solutions, preload=preload,
          check_solutions=False, **QUIET)  # fmt: skip
    row = _rows(out)["loop"]
    assert (row["status"], row["score"]) == ("timeout", "0.0"), row
    assert "CellTimeoutError" in row["notes"], row  # the loop's cell, and no other


@needs_isolation
@pytest.mark.parametrize(
    "preload",
    # The full preload (torch and TensorFlow map ~1.7 GB) does not fit a 1 GB limit: the
    # grader says so and the kernels start unaided.
    [*KERNEL_STARTS, pytest.param(forkserver.PRELOAD, id="too-big-to-preload")],
)
def test_memory_and_process_bombs_hit_their_limits(toy_course, tmp_path, preload):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs, out = tmp_path / "subs", tmp_path / "out"
    # Bounded payloads: at most 3 GB and 200 processes, so a missing limit fails the test.
    # The bomb lets go of its memory once refused, as in the class test: one that keeps it
    # starves IPython itself in the next cells, and the kernel dies instead (0 points too).
    memory_bomb = (
        "chunks = []\ntry:\n    for i in range(30):\n        chunks.append(b'x' * (100 << 20))\n"
        "except MemoryError:\n    chunks.clear()\n    raise\n"
    )
    # Each child names itself (its comm) so that only this test's are looked for below, not
    # the kernels of a grading run beside it.
    token = f"tg-bomb-{os.getpid() % 100000}"
    fork_bomb = f"""
        import os, time
        for i in range(200):
            if os.fork() == 0:
                with open("/proc/self/comm", "w") as comm:
                    comm.write({token!r})
                time.sleep(20)
                os._exit(0)
    """
    _submit(subs, "mem", _answer(release_nb, tmp_path / "m.ipynb", ADD + memory_bomb))
    _submit(
        subs, "fork", _answer(release_nb, tmp_path / "f.ipynb", ADD + textwrap.dedent(fork_bomb))
    )
    limits = sandbox.Limits(memory_mb=1024, processes=40)
    started = time.time()
    said = []
    grade(
        subs, out, cell_timeout=60, timeout=180, limits=limits, solutions=solutions,
        preload=preload, log=said.append,
    )  # fmt: skip
    refused = [line for line in said if "not preloading" in line and "1024 MB" in line]
    assert bool(refused) == (preload == forkserver.PRELOAD), said
    rows = _rows(out)
    assert (rows["mem"]["status"], rows["mem"]["score"]) == ("memory-limit", "0.0"), rows
    assert "MemoryError" in rows["mem"]["notes"]
    assert (rows["fork"]["status"], rows["fork"]["score"]) == ("process-limit", "0.0"), rows
    # The fork bomb's children (copies of its kernel, sleeping 20 s) are gone.
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "name", "uids", "status", "create_time"])
        if p.info["uids"].real >= 61000
        and p.info["create_time"] >= started
        and p.info["status"] != psutil.STATUS_ZOMBIE
        and p.info["name"] == token
    ]
    assert left == [], f"processes of the sandbox users left running: {left}"


def test_one_nbgrader_process_serves_a_worker_and_a_student_cannot_answer_for_it(
    toy_course, tmp_path
):
    # One worker: the forger's kernel writes a fake "graded" reply on every standard
    # stream, then never ends. Its row must still be a timeout, and the next submission
    # is graded by a new nbgrader process.
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs, out = tmp_path / "subs", tmp_path / "out"
    forge = """
        import os, time
        for fd in (0, 1, 2):
            try:
                os.write(fd, b'{"success": true}\\n' * 100)
            except OSError:
                pass
        time.sleep(600)
    """
    _submit(
        subs, "a_forger", _answer(release_nb, tmp_path / "f.ipynb", ADD + textwrap.dedent(forge))
    )
    _submit(subs, "b_alice", solutions / TOY / f"{TOY}.ipynb")
    _submit(subs, "c_stub", release_nb)
    messages = []
    grade(
        subs, out, workers=1, cell_timeout=600, timeout=25, solutions=solutions,
        log=messages.append,
    )  # fmt: skip
    rows = _rows(out)
    assert (rows["a_forger"]["status"], rows["a_forger"]["score"]) == ("timeout", "0.0"), rows
    assert (rows["b_alice"]["status"], rows["b_alice"]["score"]) == ("ok", "3.0"), rows
    assert (rows["c_stub"]["status"], rows["c_stub"]["score"]) == ("ok", "0.0"), rows
    assert '{"success": true}' in (out / "logs" / f"a_forger__{TOY}.log").read_text()
    # Each log holds its own submission only.
    alice_log = (out / "logs" / f"b_alice__{TOY}.log").read_text()
    assert "b_alice" in alice_log and "c_stub" not in alice_log and "success" not in alice_log


# --- resuming, roster, lateness -----------------------------------------------------------


def test_a_run_killed_midway_finishes_on_the_next_without_duplicates(toy_course, tmp_path):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs, out = tmp_path / "subs", tmp_path / "out"
    for i in range(4):
        _submit(subs, f"s{i}", solutions / TOY / f"{TOY}.ipynb")
        _submit(subs, f"t{i}", release_nb)
    script = (
        "import sys; from pathlib import Path; from autograde.grade import grade; "
        f"grade(Path({str(subs)!r}), Path({str(out)!r}), workers=1, cell_timeout=30, "
        f"solutions=Path({str(solutions)!r}), log=lambda m: None)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 240
    try:  # kill the whole run (nbgrader, kernel and all) once two rows are on disk
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "grades.csv").is_file() and len(_rows(out)) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = _rows(out)
    assert 2 <= len(first) < 8
    grade(subs, out, workers=2, cell_timeout=30, solutions=solutions, **QUIET)
    rows = _rows(out)
    assert sorted(rows) == [f"s{i}" for i in range(4)] + [f"t{i}" for i in range(4)]
    for student, row in rows.items():
        assert row["status"] == "ok", row
        assert row["score"] == ("3.0" if student.startswith("s") else "0.0"), row
    for student, row in first.items():
        assert rows[student] == row, "a row graded before the stop changed"
    # Every graded row has its page: those of the rows from before the stop too.
    for student in rows:
        assert (out / "feedback" / student / TOY / f"{TOY}.html").is_file(), student
    page = out / "feedback" / "s0" / TOY / f"{TOY}.html"
    page.write_text(page.read_text() + "<!-- kept -->")
    before = (out / "grades.csv").read_bytes()
    grade(subs, out, cell_timeout=30, solutions=solutions, **QUIET)  # nothing left to do
    assert (out / "grades.csv").read_bytes() == before
    assert page.read_text().endswith("<!-- kept -->"), "a page once written was made again"


def test_roster_lateness_and_the_score_plot(toy_course, tmp_path):
    solutions, release_dir = toy_course
    subs, out = tmp_path / "subs", tmp_path / "out"
    _submit(subs, "ada", solutions / TOY / f"{TOY}.ipynb")
    (subs / "ada" / TOY / "timestamp.txt").write_text("2026-12-01 18:30:00")  # 90 min late
    _submit(subs, "bo", solutions / TOY / f"{TOY}.ipynb")
    (subs / "bo" / TOY / "timestamp.txt").write_text("2026-12-01 16:00:00")  # on time
    roster = tmp_path / "roster.csv"
    roster.write_text("id,first_name,last_name,email\nada,Ada,L,a@x.org\nbo,Bo,,\ncy,Cy,D,\n")
    grade(subs, out, roster=roster, due="2026-12-01 17:00:00", solutions=solutions, **QUIET)
    rows = _rows(out)
    assert (rows["ada"]["status"], rows["ada"]["score"]) == ("ok", "3.0")
    assert float(rows["ada"]["late_seconds"]) == 90 * 60
    assert rows["ada"]["submitted_at"].startswith("2026-12-01 18:30")
    assert float(rows["bo"]["late_seconds"]) == 0.0
    assert (rows["cy"]["status"], rows["cy"]["score"]) == ("missing", "0.0")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_student("ada").first_name == "Ada"
        assert {s.id for s in gb.students} == {"ada", "bo", "cy"}
    plot = out / f"scores_{TOY}.png"
    assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG"


def test_a_bad_roster_is_named(tmp_path):
    roster = tmp_path / "r.csv"
    roster.write_text("name\nada\n")
    with pytest.raises(ValueError, match="'id' column"):
        read_roster(roster)
    roster.write_text("id\nada\nada\n")
    with pytest.raises(ValueError, match="line 3.*listed twice"):
        read_roster(roster)
    roster.write_text("id\n../etc\n")
    with pytest.raises(ValueError, match="not a usable student id"):
        read_roster(roster)
    with pytest.raises(FileNotFoundError, match="roster not found"):
        read_roster(tmp_path / "nope.csv")


# --- a PostgreSQL gradebook ---------------------------------------------------------------


def test_grading_into_a_postgresql_gradebook(toy_course, tmp_path, postgres_url):
    solutions, release_dir = toy_course
    subs, out = tmp_path / "subs", tmp_path / "out"
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    _submit(subs, "bob", release_dir / TOY / f"{TOY}.ipynb")
    _submit(subs, "carol", release_dir / TOY / f"{TOY}.ipynb").write_text("{")
    grade(subs, out, db=postgres_url, workers=2, cell_timeout=30, solutions=solutions, **QUIET)
    rows = _rows(out)
    assert {s: (r["score"], r["status"]) for s, r in rows.items()} == {
        "alice": ("3.0", "ok"),
        "bob": ("0.0", "ok"),
        "carol": ("0.0", "invalid-notebook"),
    }
    assert not (out / "gradebook.db").exists(), "the SQLite default was used instead"
    from nbgrader.api import Gradebook
    from sqlalchemy.engine import make_url

    with Gradebook(postgres_url) as gb:
        assert gb.find_submission(TOY, "alice").score == 3.0
        assert gb.find_submission(TOY, "bob").score == 0.0
    password = make_url(postgres_url).password
    for path in out.rglob("*"):  # the URL's password stays out of logs and feedback
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    before = (out / "grades.csv").read_bytes()
    grade(subs, out, db=postgres_url, cell_timeout=30, solutions=solutions, **QUIET)
    assert (out / "grades.csv").read_bytes() == before


# --- the sandbox user's lock and clean-up -------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox users exist only as root")


@needs_root
def test_a_planted_lock_path_neither_truncates_a_file_nor_stops_the_run(tmp_path):
    """A kernel could plant a symlink, or a plain file, at the lock path of the next worker's
    sandbox user; the grader (root) must not follow it, truncate it or give up."""
    victim = tmp_path / "precious.txt"
    victim.write_text("the instructor's file")
    base = 62100 + os.getpid() % 500  # ids no other test or run is likely to hold
    planted = []
    for uid in (base, base + 1):
        for folder in {Path(tempfile.gettempdir()), sandbox.SandboxUser.lock_folder()}:
            path = folder / f"twin-gpt-sandbox-{uid}.lock"
            if not path.exists() and not path.is_symlink():
                os.symlink(victim, path) if uid == base else path.write_text("planted")
                planted.append(path)
    try:
        first, second = sandbox.SandboxUser(base=base), sandbox.SandboxUser(base=base)
        assert {first.uid, second.uid} <= set(range(base, base + 1000))
        assert first.uid != second.uid
        first.release(), second.release()
    finally:
        for path in planted:
            path.unlink(missing_ok=True)
    assert victim.read_text() == "the instructor's file", "the grader truncated a planted link"
    folder = sandbox.SandboxUser.lock_folder()
    info = folder.lstat()
    assert info.st_uid == 0 and not info.st_mode & 0o077, "the lock folder is not root's alone"


def _fork_chain(uid: int, seconds: float = 20.0) -> None:
    """A process of `uid` that forks a child and exits, over and over, for at most `seconds`
    (at most a few thousand generations): its pid changes all the time."""
    child = os.fork()
    if child:
        os.waitpid(child, 0)  # it leaves at once: the chain belongs to init, not to pytest
        return
    try:
        if os.fork():
            os._exit(0)
        try:
            os.setsid()
            os.setgid(uid)
            os.setuid(uid)
            deadline = time.monotonic() + seconds
            for _ in range(5000):
                if time.monotonic() > deadline:
                    break
                if os.fork() != 0:
                    os._exit(0)  # the parent leaves: the chain lives on in its child
                time.sleep(0.01)
        finally:
            os._exit(0)
    finally:
        os._exit(0)


def _processes_of(uid: int, looks: int = 20) -> list[int]:
    """Live processes of `uid`, looked for up to `looks` times 10 ms apart (a chain's
    process lives a few milliseconds: one look may fall between two of them)."""
    for _ in range(looks):
        found = []
        for proc in psutil.process_iter(["uids", "status"]):
            uids = proc.info["uids"]
            if uids and uids.real == uid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        if found:
            return found
        time.sleep(0.01)
    return []


@needs_root
def test_a_fork_chain_left_behind_is_killed_to_the_last_process():
    user = sandbox.SandboxUser(base=62700 + os.getpid() % 200)
    try:
        for _ in range(3):  # three chains, as a kernel could leave
            _fork_chain(user.uid)
        time.sleep(0.5)
        assert _processes_of(user.uid), "the fork chain did not start"
        sandbox.kill_user(user.uid)
        time.sleep(1.0)  # a chain that survived has forked again by now
        left = _processes_of(user.uid)
        assert left == [], f"processes of the sandbox user left running: {left}"
    finally:
        for _ in range(50):  # never leave a chain behind, even when the test fails
            if not _processes_of(user.uid):
                break
            for pid in _processes_of(user.uid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        user.release()


# --- what kernels share with the machine: /tmp, /dev/shm, processes ---------------------


def _printed(out: Path, student: str) -> str:
    graded = nbformat.read(out / "autograded" / student / TOY / f"{TOY}.ipynb", as_version=4)
    return "".join(
        o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.outputs
    )


@needs_isolation
@pytest.mark.parametrize("preload", KERNEL_STARTS)
def test_a_kernel_gets_its_own_tmp_and_shm_gone_when_it_ends(toy_course, tmp_path, preload):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs, out = tmp_path / "subs", tmp_path / "out"
    name = f"tg-left-behind-{os.getpid()}-{time.monotonic_ns()}"
    left = [Path("/tmp") / name, Path("/dev/shm") / name]
    fd, marker = tempfile.mkstemp(prefix="tg-host-marker-", dir="/tmp")  # the host's own
    os.close(fd)
    snoop = f"""
        import os
        for path in {[str(p) for p in left]!r}:
            with open(path, "w") as fh:
                fh.write("left behind")
            print("wrote", path)
        print("listing", sorted(os.listdir("/tmp")))
    """
    try:
        notebook = _answer(release_nb, tmp_path / "t.ipynb", ADD + textwrap.dedent(snoop))
        _submit(subs, "mallory", notebook)
        grade(
            subs, out, cell_timeout=30, timeout=120, solutions=solutions, preload=preload,
            **QUIET,
        )  # fmt: skip
        found = [str(path) for path in left if path.exists()]
    finally:
        for path in [*left, Path(marker)]:
            path.unlink(missing_ok=True)
    rows = _rows(out)
    assert (rows["mallory"]["score"], rows["mallory"]["status"]) == ("3.0", "ok"), rows
    printed = _printed(out, "mallory")
    for path in left:  # the kernel could use both ...
        assert f"wrote {path}" in printed, printed
    assert found == [], f"a kernel's files outlived it on the machine: {found}"  # ... alone
    listing = printed.split("listing ")[1].splitlines()[0]
    assert Path(marker).name not in listing, f"the kernel saw the machine's /tmp: {listing}"


@needs_isolation
@pytest.mark.parametrize("preload", KERNEL_STARTS)
def test_a_kernel_sees_only_its_own_processes(toy_course, tmp_path, preload):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs, out = tmp_path / "subs", tmp_path / "out"
    snoop = f"""
        import os
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
        seen = os.path.exists("/proc/{os.getpid()}/cmdline")
        print("processes", len(pids), "grader-seen" if seen else "grader-unseen")
    """
    notebook = _answer(release_nb, tmp_path / "p.ipynb", ADD + textwrap.dedent(snoop))
    _submit(subs, "mallory", notebook)
    grade(
        subs, out, cell_timeout=30, timeout=120, solutions=solutions, preload=preload,
        **QUIET,
    )  # fmt: skip
    rows = _rows(out)
    assert (rows["mallory"]["score"], rows["mallory"]["status"]) == ("3.0", "ok"), rows
    words = _printed(out, "mallory").split("processes ")[1].split()
    assert int(words[0]) <= 10 and words[1] == "grader-unseen", words


def test_a_kernel_gains_no_privileges_and_goes_first_when_memory_runs_out(toy_course, tmp_path):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs, out = tmp_path / "subs", tmp_path / "out"
    probe = (
        "status = open('/proc/self/status').read()\n"
        "print('no-new-privs', [l.split()[1] for l in status.splitlines()"
        " if l.startswith('NoNewPrivs')])\n"
        "print('oom-score-adj', open('/proc/self/oom_score_adj').read().strip())\n"
    )
    _submit(subs, "eve", _answer(release_nb, tmp_path / "e.ipynb", probe + ADD))
    grade(subs, out, cell_timeout=60, solutions=solutions, preload=False, **QUIET)
    assert _rows(out)["eve"]["score"] == "3.0"
    text = (out / "autograded" / "eve" / TOY / f"{TOY}.ipynb").read_text()
    assert "no-new-privs ['1']" in text, "the kernel may gain privileges (a setuid program)"
    assert "oom-score-adj 1000" in text, "the kernel is not the first to go out of memory"


@needs_isolation
def test_a_kernel_still_reaches_course_data_kept_in_tmp_behind_a_link(
    toy_course, tmp_path, monkeypatch
):
    """Its own /tmp must not cost a kernel what it needs from the real one: a checkout and
    its data under /tmp (a fresh clone, `../shared` a link beside it) stay reachable."""
    solutions, release_dir = toy_course
    real = Path(tempfile.mkdtemp(prefix="twin-gpt-data-", dir="/tmp"))
    link = Path(tempfile.mkdtemp(prefix="twin-gpt-link-", dir="/tmp"))
    try:
        for folder in (real, link):
            folder.chmod(0o755)
        (real / "corpus.txt").write_text("to be or not to be")
        (link / "shared").symlink_to(real)
        monkeypatch.setenv("COURSE_DATA_DIR", str(link / "shared"))
        reader = "import os\nprint(open(os.environ['COURSE_DATA_DIR'] + '/corpus.txt').read())\n"
        subs, out = tmp_path / "subs", tmp_path / "out"
        _submit(subs, "ada", _answer(release_dir / TOY / f"{TOY}.ipynb", tmp_path / "a.ipynb",
                                     reader + ADD))  # fmt: skip
        grade(subs, out, cell_timeout=60, solutions=solutions, preload=False, **QUIET)
        assert _rows(out)["ada"]["score"] == "3.0"
        text = (out / "autograded" / "ada" / TOY / f"{TOY}.ipynb").read_text()
        assert "to be or not to be" in text
    finally:
        shutil.rmtree(real), shutil.rmtree(link)


@contextlib.contextmanager
def _machine_around_the_grader():
    """What else lives on an instructor's machine, each readable (or open) to any user: a
    second checkout of the course with its solutions, a home folder, a database server's
    Unix socket, a file in /etc, the shared /var/tmp. Removed afterwards."""
    tag = f"tg-{os.getpid()}-{time.monotonic_ns()}"
    made = [Path("/var/tmp") / tag, Path("/home") / tag, Path("/etc") / f"{tag}.conf"]
    checkout, home, etc_file = made
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        solution = checkout / "course" / "solutions" / "00_setup" / "00_setup.ipynb"
        solution.parent.mkdir(parents=True)
        solution.write_text("SOLUTION OF ANOTHER CHECKOUT")
        home.mkdir(mode=0o755)
        (home / "notes.txt").write_text("INSTRUCTOR HOME NOTES")
        etc_file.write_text("password = ETC SECRET")
        (checkout / "db").mkdir()
        socket_path = checkout / "db" / ".s.PGSQL.5432"
        listener.bind(str(socket_path))
        listener.listen(4)
        socket_path.chmod(0o777)
        for path in [checkout, *checkout.rglob("*"), home, home / "notes.txt", etc_file]:
            path.chmod(0o777 if path == socket_path else 0o755 if path.is_dir() else 0o644)
        yield {"solution": solution, "home": home / "notes.txt", "etc": etc_file,
               "socket": socket_path, "var_tmp": Path("/var/tmp") / f"{tag}-left"}  # fmt: skip
    finally:
        listener.close()
        shutil.rmtree(checkout, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        etc_file.unlink(missing_ok=True)
        (Path("/var/tmp") / f"{tag}-left").unlink(missing_ok=True)


@needs_isolation
@pytest.mark.parametrize("preload", KERNEL_STARTS)
def test_a_kernel_sees_only_what_it_needs_of_the_machine(toy_course, tmp_path, preload):
    """Not a list of hidden folders: the kernel's file system holds the system's programs,
    the interpreter, the course and its data, and its scratch folder; nothing else of the
    machine is there to read, write or connect to."""
    solutions, release_dir = toy_course
    subs, out = tmp_path / "subs", tmp_path / "out"
    with _machine_around_the_grader() as around:
        snoop = f"""
            import os, socket
            for name, path in {[(k, str(v)) for k, v in around.items() if k != "var_tmp"]!r}:
                try:
                    if name == "socket":
                        socket.socket(socket.AF_UNIX).connect(path)
                    else:
                        open(path).read()
                    print("REACHED", name)
                except OSError as err:
                    print("unreached", name, type(err).__name__)
            try:
                with open({str(around["var_tmp"])!r}, "w") as fh:
                    fh.write("left")
                print("REACHED var_tmp")
            except OSError as err:
                print("unreached var_tmp", type(err).__name__)
            print("root", sorted(os.listdir("/")))
        """
        notebook = _answer(release_dir / TOY / f"{TOY}.ipynb", tmp_path / "v.ipynb",
                           ADD + textwrap.dedent(snoop))  # fmt: skip
        _submit(subs, "mallory", notebook)
        grade(
            subs, out, cell_timeout=30, timeout=120, solutions=solutions, preload=preload,
            **QUIET,
        )  # fmt: skip
        left_behind = around["var_tmp"].exists()
    rows = _rows(out)
    assert (rows["mallory"]["score"], rows["mallory"]["status"]) == ("3.0", "ok"), rows
    printed = _printed(out, "mallory")
    for name in ("solution", "home", "etc", "socket", "var_tmp"):
        assert f"unreached {name} " in printed, printed
    assert "REACHED" not in printed and not left_behind, printed
    top = printed.split("root ")[1].splitlines()[0]
    for absent in ("home", "var", "srv", "mnt", "opt", "boot"):
        assert f"'{absent}'" not in top, f"the kernel sees /{absent}: {top}"


def _readable_by_anyone(path: Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in [path, *path.parents])


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not _readable_by_anyone(REPO),
    reason="needs root to become an ordinary user (setpriv) and a checkout others may read",
)
def test_an_ordinary_user_gets_the_view_no_network_and_no_capabilities_left(tmp_path):
    """An instructor without root: bubblewrap makes the kernel's view in a user namespace
    of its own, `sandbox.enter` its own /tmp and processes there, then drops every
    capability. Run as an unprivileged user id, with the system's Python (the course's
    may sit in root's home)."""
    if not sandbox.view.bwrap():
        pytest.skip("bubblewrap is not installed")
    user = sandbox.SandboxUser()
    parent = Path(tempfile.mkdtemp(prefix="tg-user-", dir="/tmp"))
    listener = _Listener()
    try:
        (parent / "work").mkdir()
        for path in (parent, parent / "work"):
            os.chown(path, user.uid, user.gid)
        parent.chmod(0o711)
        inner = textwrap.dedent(f"""
            import ctypes, json, os, socket, sys
            from autograde import sandbox
            settings = sandbox.Settings.read(sys.argv[1])
            open(settings.scratch + "/conn.json", "w").write("{{}}")
            sandbox.enter(settings, settings.scratch + "/conn.json")
            seen = {{}}
            for name, path in json.loads(sys.argv[2]).items():
                try:
                    if name == "socket":
                        socket.socket(socket.AF_UNIX).connect(path)
                    elif name == "var_tmp" or name == "repo":
                        open(path, "w").write("left")
                    else:
                        open(path).read()
                    seen[name] = "REACHED"
                except OSError as err:
                    seen[name] = "unreached"
            try:
                socket.create_connection(("127.0.0.1", {listener.port}), timeout=2)
                seen["network"] = "REACHED"
            except OSError:
                seen["network"] = "unreached"
            try:  # its own loopback is up: a network of one
                echo = socket.create_server(("127.0.0.1", 0))
                with socket.create_connection(echo.getsockname(), timeout=5):
                    seen["loopback"] = "up"
            except OSError as err:
                seen["loopback"] = str(err)
            open("/tmp/mine", "w").write("x")
            status = open("/proc/self/status").read()
            seen["caps"] = [l.split()[1] for l in status.splitlines() if l.startswith("Cap")]
            seen["pid"] = os.getpid()
            seen["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
            libc = ctypes.CDLL(None, use_errno=True)
            seen["unshare"] = libc.unshare(sandbox.CLONE_NEWNS)
            print(json.dumps(seen))
        """)
        script = textwrap.dedent(f"""
            import json, subprocess, sys
            from autograde import sandbox, view
            report = sandbox.isolation()
            settings = sandbox.Settings(scratch={str(parent / "work")!r}, repo={str(REPO)!r},
                                        python_path=[{str(REPO)!r}], use_view=True)
            settings.write(sandbox.Path({str(parent / "work" / "s.json")!r}))
            argv = [sys.executable, "-c", {inner!r}, {str(parent / "work" / "s.json")!r},
                    sys.argv[1]]
            done = subprocess.run(view.command(settings, argv), env=sandbox.kernel_env(settings),
                                  capture_output=True, text=True, timeout=60)
            print(json.dumps({{"report": report, "rc": done.returncode, "err": done.stderr}}))
            print(done.stdout)
        """)
        with _machine_around_the_grader() as around:
            targets = {k: str(v) for k, v in around.items()}
            targets["repo"] = str(REPO / "tg-written-by-a-kernel")
            done = subprocess.run(
                ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                 "/usr/bin/python3", "-c", script, json.dumps(targets)],
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                cwd="/", capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        assert done.returncode == 0, done.stderr
        first, second = done.stdout.strip().splitlines()[-2:]
        outer, seen = json.loads(first), json.loads(second)
    finally:
        listener.close()
        sandbox.kill_user(user.uid)
        user.release()
        shutil.rmtree(parent, ignore_errors=True)
        (REPO / "tg-written-by-a-kernel").unlink(missing_ok=True)
    report = outer["report"]
    assert report["separate_user"] is False and report["allow_list"] is True, report
    assert all(report[k] for k in ("hidden_folders", "no_network", "private_tmp",
                                   "own_processes")), report  # fmt: skip
    assert outer["rc"] == 0, outer["err"]
    for name in ("solution", "home", "etc", "socket", "var_tmp", "repo", "network"):
        assert seen[name] == "unreached", (name, seen)
    assert seen["loopback"] == "up", seen
    assert not (parent / "work" / "mine").exists()
    assert seen["pid"] == 1 and seen["processes"] <= 3, seen
    assert set(seen["caps"][:3]) == {"0000000000000000"}, seen["caps"]  # inh, prm, eff
    assert seen["unshare"] != 0, "the kernel could still make namespaces"


@needs_isolation
@pytest.mark.slow
def test_a_kernel_can_run_two_distributed_ranks(toy_course, tmp_path):
    """Chapter 09's ranks run inside a graded kernel: two spawned processes that import
    torch meet on the kernel's own loopback (gloo), within its process and memory limits,
    and rank 0's result comes back to the cell; none of them is left afterwards."""
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    out, subs = tmp_path / "out", tmp_path / "subs"
    ranks = """
        from course.torch import _distributed_workers as workers
        from course.torch.launch import launch
        try:
            print("ranks said", launch(workers.echo, 2, "hi", timeout_s=60, max_seconds=120))
        except Exception as err:
            print("ranks failed", type(err).__name__, str(err)[:2000])
    """
    notebook = _answer(release_nb, tmp_path / "ranks.ipynb", ADD)
    nb = nbformat.read(notebook, as_version=4)  # a cell of the student's own, not an answer
    nb.cells.append(nbformat.v4.new_code_cell(textwrap.dedent(ranks)))
    nbformat.write(nb, notebook)
    _submit(subs, "dana", notebook)
    grade(subs, out, cell_timeout=180, timeout=300, solutions=solutions, **QUIET)
    rows = _rows(out)
    assert (rows["dana"]["score"], rows["dana"]["status"]) == ("3.0", "ok"), rows
    graded = nbformat.read(out / "autograded" / "dana" / TOY / f"{TOY}.ipynb", as_version=4)
    printed = "".join(
        o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "ranks said ('hi', 2, 1.0)" in printed, printed

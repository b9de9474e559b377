"""The gradebook on a real PostgreSQL server (`--db postgresql://...`), and that server's
own guarantees: loopback only, password only, nothing left running or on disk after it."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import postgres as pg_module
import psutil
import psycopg
import pytest
from nbgrader.api import Gradebook
from postgres import (
    PostgresUnavailable,
    find_bin_dir,
    postgres_server,
    postgres_server_or_skip,
    server_bin_dir,
)
from sqlalchemy.engine import make_url

from autograde.gradebook import DB_VARIABLE, gradebook_url


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    with postgres_server_or_skip(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture
def venv_on_path(monkeypatch):
    """A Gradebook creating its tables runs `alembic`, which lives in the venv's bin."""
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )


def _libpq(url: str, **changes) -> str:
    """The SQLAlchemy URL as a libpq connection string, with some fields changed."""
    parts = make_url(url)
    fields = {
        "host": parts.host,
        "port": parts.port,
        "user": parts.username,
        "password": parts.password,
        "dbname": parts.database,
        "connect_timeout": 5,
    }
    fields.update(changes)
    return " ".join(f"{key}={value}" for key, value in fields.items())


def _listeners(port: int) -> list:
    return [
        c
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]


def _postmaster(port: int) -> psutil.Process:
    """The server process started with `-p PORT` (see postgres._start)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and Path(cmdline[0]).name == "postgres" and ["-p", str(port)] == cmdline[3:5]:
            return process
    raise AssertionError(f"no postgres process with -p {port}")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_gradebook_round_trip(pg_url, venv_on_path):
    assert make_url(pg_url).host == "127.0.0.1"
    with Gradebook(pg_url) as gb:
        assert gb.engine.dialect.name == "postgresql"
        gb.add_assignment("ps1")
        gb.add_student("alice", first_name="Alice", last_name="Liddell")
    # A second connection reads what the first one committed.
    with Gradebook(pg_url) as gb:
        assert [a.name for a in gb.assignments] == ["ps1"]
        student = gb.find_student("alice")
        assert (student.first_name, student.last_name) == ("Alice", "Liddell")


def test_listens_on_loopback_only(pg_url):
    port = make_url(pg_url).port
    with psycopg.connect(_libpq(pg_url)) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    listeners = _listeners(port)
    assert listeners and {c.laddr.ip for c in listeners} == {"127.0.0.1"}
    # Other addresses of this machine: 127.0.0.2 (Linux routes all of 127/8 to lo) and
    # those of its interfaces. The port is closed on every one of them.
    others = {"127.0.0.2"} | {
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and a.address != "127.0.0.1"
    }
    for address in sorted(others):
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.settimeout(5)
            sock.connect((address, port))


def test_tcp_wants_the_password(pg_url):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_libpq(pg_url, password="wrong"))
    # The superuser has no TCP entry in pg_hba.conf at all (no `trust` over TCP).
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(_libpq(pg_url, user="postgres", password="", dbname="postgres"))


@pytest.mark.parametrize("body", ["returns", "raises"])
def test_nothing_left_after_exit(tmp_path, body):
    try:
        server_bin_dir()
    except PostgresUnavailable as err:
        pytest.skip(f"no PostgreSQL server: {err}")

    class BodyFailed(Exception):
        pass

    client = None
    try:
        with postgres_server(tmp_path) as url:
            port = make_url(url).port
            # A client still connected must not hold the shutdown up.
            client = psycopg.connect(_libpq(url))
            postmaster = _postmaster(port)
            # Its helpers (checkpointer, writers...) and the client's backend.
            processes = [postmaster, *postmaster.children(recursive=True)]
            assert len(processes) > 2
            data = Path(postmaster.cmdline()[2])
            assert (data / "PG_VERSION").is_file()
            if body == "raises":
                raise BodyFailed
    except BodyFailed:
        assert body == "raises"
    finally:
        if client is not None:
            client.close()
    assert not _listeners(port)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    assert not [p for p in processes if _alive(p)]
    assert not data.parent.exists()  # the private folder, data and socket with it
    assert "database system is shut down" in (tmp_path / "postgres.log").read_text()


def test_newest_complete_version_is_chosen(tmp_path):
    for version, names in [
        ("9.6", pg_module.BINARIES),
        ("15", pg_module.BINARIES),
        ("16", ["postgres"]),
    ]:
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for name in names:
            (bin_dir / name).touch(mode=0o755)
    (tmp_path / "common").mkdir()  # not a version
    assert find_bin_dir(tmp_path) == tmp_path / "15" / "bin"
    assert find_bin_dir(tmp_path / "common") is None


def test_unavailable_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(pg_module, "PG_ROOT", tmp_path)
    monkeypatch.setattr(pg_module, "_bin_dir_cache", {})
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PostgresUnavailable, match="not root to apt-get install postgresql"):
        with postgres_server(tmp_path):
            pass


def test_a_gradebook_password_never_comes_from_the_command_line():
    with pytest.raises(ValueError, match="pgpass"):
        gradebook_url("postgresql://grader:secret@127.0.0.1/book", environ={})
    assert gradebook_url("postgresql://grader@127.0.0.1/book", environ={}) == (
        "postgresql://grader@127.0.0.1/book"
    )
    from_env = {DB_VARIABLE: "postgresql://grader:secret@127.0.0.1/book"}
    assert gradebook_url(None, environ=from_env) == from_env[DB_VARIABLE]
    assert gradebook_url(None, environ={}) is None
    with pytest.raises(ValueError, match="not a database URL"):
        gradebook_url("::not a url::", environ={})


def test_the_sqlite_gradebook_lets_writers_queue_instead_of_failing(tmp_path):
    """Several workers (and their nbgrader processes) write one SQLite gradebook: in WAL
    mode with a long busy timeout a second writer waits for the first instead of failing
    with "database is locked"."""
    import sqlite3
    import threading
    import time

    from autograde.gradebook import BUSY_SECONDS, default_url, make_private

    url = default_url(tmp_path)
    assert f"timeout={BUSY_SECONDS}" in url and BUSY_SECONDS >= 30
    with Gradebook(url) as gb:  # nbgrader creates its tables from the same URL
        gb.add_assignment("a1")
    make_private(url)
    path = tmp_path / "gradebook.db"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    first = sqlite3.connect(path, check_same_thread=False)  # committed by a timer thread
    assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    first.execute("BEGIN IMMEDIATE")  # a writer holds the lock longer than sqlite3's
    threading.Timer(6.0, first.commit).start()  # default wait of 5 s
    started = time.monotonic()
    with Gradebook(url) as gb:  # the second writer waits, then succeeds
        gb.add_student("alice")
    assert 5.5 < time.monotonic() - started < BUSY_SECONDS
    first.close()
    with Gradebook(url) as gb:
        assert [s.id for s in gb.students] == ["alice"]

"""A throwaway PostgreSQL server for the tests of the gradebook's `--db postgresql://...` path.

`postgres_server(workdir)` starts a private server from Debian's PostgreSQL binaries and
yields a SQLAlchemy URL for nbgrader's `Gradebook`::

    postgresql://grader:PASSWORD@127.0.0.1:PORT/gradebook

The server has a data folder of its own (a fresh `initdb`), listens on 127.0.0.1 only, at a
free port, and lets TCP clients in only as the role `grader` with its random password
(SCRAM). It is stopped and its folder removed when the `with` block ends, also when the
block raises. Where the binaries are missing, the server package is installed with apt-get
(root only); where that is not possible, `PostgresUnavailable` says why, in one line.

Tests take the session-wide server through the `postgres_url` fixture, which skips with
that reason; a test module imports it once and asks for it by name::

    from postgres import postgres_url_fixture  # noqa: F401  (the `postgres_url` fixture)

    def test_something(postgres_url): ...

SQLAlchemy 2.1+ connects to such a URL with psycopg 3 (the `grading` extra). A `Gradebook`
that creates its tables runs nbgrader's `alembic` command: the venv's bin must be on PATH.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

# Debian installs each major version's server under /usr/lib/postgresql/VERSION/bin.
PG_ROOT = Path("/usr/lib/postgresql")
# What this module runs: the server, a fresh data folder, a client and a readiness probe.
# `psql` and `pg_isready` come with the server package (postgresql-client-NN).
BINARIES = ("initdb", "postgres", "psql", "pg_isready")
APT_PACKAGE = "postgresql"
INSTALL_SECONDS = 300  # apt-get install, with an `apt-get update` if needed, in all
READY_SECONDS = 30  # from `postgres` started to accepting connections
STOP_SECONDS = 30  # fast shutdown, before the server is killed
ROLE, DATABASE = "grader", "gradebook"
# The superuser is "postgres" (local socket only, see pg_hba.conf); the cluster's encoding
# is UTF8 whatever the machine's locale; no fsync of the fresh files; no closing advice.
INITDB_FLAGS = "-U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions"
# No ~/.psqlrc, quiet, and the first failing statement fails the whole input.
PSQL_FLAGS = "-X -q -v ON_ERROR_STOP=1 -U postgres -d postgres"
# The server refuses to run as root; as root it runs as the package's user, else `nobody`.
SERVER_USERS = ("postgres", "nobody")
# A Unix socket's path is at most 107 bytes: ".s.PGSQL.PORT.lock" must fit after the folder.
MAX_SOCKET_DIR = 80


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be run here; the message says why, in one line."""


@dataclass(frozen=True)
class _User:
    """Whom the server's processes run as (None: as this process's own user)."""

    uid: int | None = None
    gid: int | None = None

    def run_kwargs(self) -> dict:
        if self.uid is None:
            return {}
        # No supplementary groups: the server gets the user's own group and nothing of ours.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


# One look-up (and at most one install attempt) per test session.
_bin_dir_cache: dict[str, Path | PostgresUnavailable] = {}


def find_bin_dir(root: Path | None = None) -> Path | None:
    """The newest `root/VERSION/bin` (root: PG_ROOT) holding all of BINARIES, or None."""
    root = PG_ROOT if root is None else root

    def version(folder: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in folder.name.split("."))
        except ValueError:
            return ()

    candidates = sorted((d for d in root.glob("*") if version(d)), key=version, reverse=True)
    for folder in candidates:
        bin_dir = folder / "bin"
        if all(os.access(bin_dir / name, os.X_OK) for name in BINARIES):
            return bin_dir
    return None


@contextlib.contextmanager
def _services_kept_down() -> Iterator[None]:
    """While installing, tell Debian's maintainer scripts not to start any service.

    The package's post-install script creates a cluster "main" and starts it on port 5432;
    an exit code 101 from /usr/sbin/policy-rc.d (Debian's hook for chroots and containers)
    forbids that, so the install leaves nothing running. An existing policy is kept as is.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# Set while tests/postgres.py installs PostgreSQL.\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def _install(deadline: float) -> str | None:
    """apt-get install the server package; None on success, else why it failed (one line)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    # Wait a little for another apt/dpkg run's lock rather than failing at once.
    install += ["-o", "DPkg::Lock::Timeout=60", APT_PACKAGE]

    def run(command: list[str]) -> subprocess.CompletedProcess | str:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"`{' '.join(command[:2])}` not started: {INSTALL_SECONDS} s budget used up"
        try:
            return subprocess.run(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=left,
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command[:2])}` took more than {INSTALL_SECONDS} s in all"

    def failure(result: subprocess.CompletedProcess | str) -> str | None:
        if isinstance(result, str):
            return result
        if result.returncode == 0:
            return None
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        return f"`{' '.join(result.args[:2])}` exited with {result.returncode}: {lines[-1]}"

    with _services_kept_down():
        # The package lists may be missing or stale (a fresh container): update only then.
        why = failure(run(install))
        if why is None:
            return None
        why_update = failure(run(["apt-get", "update", "-q"]))
        if why_update is not None:
            return why_update
        return failure(run(install))


def server_bin_dir() -> Path:
    """The folder of the server binaries, installed first where missing and allowed.

    Raises PostgresUnavailable (the same one for the rest of the session) where there are
    none and they cannot be installed.
    """
    if "bin" not in _bin_dir_cache:
        _bin_dir_cache["bin"] = _locate_or_install()
    found = _bin_dir_cache["bin"]
    if isinstance(found, PostgresUnavailable):
        raise found
    return found


def _locate_or_install() -> Path | PostgresUnavailable:
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        return bin_dir
    missing = f"no PostgreSQL server binaries ({', '.join(BINARIES)}) under {PG_ROOT}/*/bin"
    if os.geteuid() != 0:
        return PostgresUnavailable(f"{missing}, and not root to apt-get install {APT_PACKAGE}")
    if shutil.which("apt-get") is None:
        return PostgresUnavailable(f"{missing}, and no apt-get to install {APT_PACKAGE}")
    why = _install(time.monotonic() + INSTALL_SECONDS)
    if why is not None:
        return PostgresUnavailable(f"{missing}; apt-get install {APT_PACKAGE} failed: {why}")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return PostgresUnavailable(f"{missing}, even after apt-get install {APT_PACKAGE}")
    return bin_dir


def _server_user() -> _User:
    """As root: the first of SERVER_USERS that exists. Otherwise: ourselves."""
    if os.geteuid() != 0:
        return _User()
    for name in SERVER_USERS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return _User(entry.pw_uid, entry.pw_gid)
    raise PostgresUnavailable(f"running as root and none of the users {SERVER_USERS} exists")


def _reachable(folder: Path, user: _User) -> bool:
    """Whether `user` may enter `folder` (every ancestor searchable) and sockets fit in it."""
    if len(str(folder)) > MAX_SOCKET_DIR:
        return False
    if user.uid is None:
        return os.access(folder, os.X_OK)
    for part in [folder, *folder.parents]:
        st = part.stat()
        if st.st_uid == user.uid:
            bit = 0o100
        elif st.st_gid == user.gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def _private_dir(workdir: Path, user: _User) -> Path:
    """A fresh 0700 folder owned by the server's user, inside `workdir` where it can be.

    pytest's folders are private to root (0700) when it runs as root, and the server's
    user could not enter them: the folder then goes to the system's temporary folder.
    """
    parents = [workdir, Path(tempfile.gettempdir()), Path("/tmp")]
    parent = next((p for p in parents if p.is_dir() and _reachable(p, user)), None)
    if parent is None:
        raise PostgresUnavailable(f"no folder the server's user can enter among {parents}")
    private = Path(tempfile.mkdtemp(prefix="pg-", dir=parent))
    if user.uid is not None:
        os.chown(private, user.uid, user.gid)
    return private


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server may still lose it: see retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    """Our environment without libpq's PG* variables, which would redirect the tools."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _run(command: list, user: _User, what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in command],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=READY_SECONDS,
        **user.run_kwargs(),
        **kwargs,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def _initdb(bin_dir: Path, data: Path, socket_dir: Path, user: _User) -> None:
    """A fresh cluster in `data`, configured for local tests (see the comments below)."""
    _run([bin_dir / "initdb", "-D", data, *INITDB_FLAGS.split()], user, "initdb")
    # Later settings win over initdb's defaults earlier in the file.
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# Set for the tests (tests/postgres.py).\n"
            "listen_addresses = '127.0.0.1'  # TCP on the loopback address only\n"
            f"unix_socket_directories = '{socket_dir}'  # a 0700 folder: no one else enters\n"
            "unix_socket_permissions = 0700\n"
            "password_encryption = 'scram-sha-256'\n"
            "shared_buffers = 16MB\n"
            "max_connections = 40\n"
            # A test database is thrown away: durability only costs time.
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
        )
    # Replaces initdb's file. The superuser comes in only through the private socket; over
    # TCP only `grader` with its password. Anything else has no entry and is refused.
    (data / "pg_hba.conf").write_text(
        "# TYPE  DATABASE  USER      ADDRESS        METHOD\n"
        "local   all       postgres                 trust\n"
        f"host    all       {ROLE}    127.0.0.1/32   scram-sha-256\n"
    )


def _stop(server: subprocess.Popen) -> None:
    """Fast shutdown (what `pg_ctl stop -m fast` sends), then kill what is left."""
    if server.poll() is not None:
        return
    children = []
    with contextlib.suppress(psutil.Error):
        # The backends and helpers, gathered now: they outlive a killed postmaster a while.
        children = psutil.Process(server.pid).children(recursive=True)
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=STOP_SECONDS)
        return
    except subprocess.TimeoutExpired:
        pass
    server.kill()
    for process in children:
        with contextlib.suppress(psutil.Error):
            process.kill()
    server.wait(timeout=STOP_SECONDS)
    psutil.wait_procs(children, timeout=STOP_SECONDS)


def _start(
    bin_dir: Path, data: Path, socket_dir: Path, user: _User, log: Path
) -> tuple[subprocess.Popen, int]:
    """The postmaster, accepting connections; retried on another port if its port is taken."""
    for _attempt in range(3):
        port = _free_port()
        with log.open("ab") as log_file:
            server = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)],
                stdin=subprocess.DEVNULL,
                env=_env(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                **user.run_kwargs(),
            )
        try:
            deadline = time.monotonic() + READY_SECONDS
            while time.monotonic() < deadline and server.poll() is None:
                probe = [bin_dir / "pg_isready", "-q", "-h", socket_dir, "-p", port, "-t", "2"]
                ready = subprocess.run(
                    [str(c) for c in probe], env=_env(), timeout=10, **user.run_kwargs()
                )
                if ready.returncode == 0:
                    return server, port
                time.sleep(0.1)
        except BaseException:
            _stop(server)
            raise
        _stop(server)
        text = log.read_text(errors="replace")
        if "could not bind" not in text and "already in use" not in text:
            break
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"PostgreSQL did not start within {READY_SECONDS} s; its log ends:\n{tail}")


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """Run a private PostgreSQL server for the `with` block; yields the gradebook's URL.

    Raises PostgresUnavailable where no server can be installed or run. The server's log
    is copied to `workdir/postgres.log` when it stops.
    """
    bin_dir = server_bin_dir()
    user = _server_user()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    private = _private_dir(workdir, user)
    data, log = private / "data", private / "postgres.log"
    server = None
    try:
        _initdb(bin_dir, data, private, user)
        server, port = _start(bin_dir, data, private, user, log)
        password = secrets.token_hex(16)  # hex: needs no quoting in SQL nor in the URL
        _run(
            [bin_dir / "psql", "-h", private, "-p", port, *PSQL_FLAGS.split()],
            user,
            "creating the role and database",
            # On standard input, so the password is never on a command line.
            input=f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}';\n"
            f"CREATE DATABASE {DATABASE} OWNER {ROLE};\n",
        )
        yield f"postgresql://{ROLE}:{password}@127.0.0.1:{port}/{DATABASE}"
    finally:
        try:
            if server is not None:
                _stop(server)
        finally:
            with contextlib.suppress(OSError):
                shutil.copyfile(log, workdir / "postgres.log")
            shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def postgres_server_or_skip(workdir: Path) -> Iterator[str]:
    """`postgres_server`, for fixtures: skips the test, saying why, where none can be run."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server(workdir))
        except PostgresUnavailable as err:
            pytest.skip(f"no PostgreSQL server: {err}")
        yield url


# Registered as `postgres_url` under another Python name, so a module that imports it and
# takes `postgres_url` as an argument does not redefine the imported name (ruff F811).
@pytest.fixture(scope="session", name="postgres_url")
def postgres_url_fixture(tmp_path_factory) -> Iterator[str]:
    """One server for the whole test session (see `postgres_server`)."""
    with postgres_server_or_skip(tmp_path_factory.mktemp("postgres")) as url:
        yield url

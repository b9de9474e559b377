"""A fork server per grading worker: the libraries a kernel imports, imported once.

A chapter-00 kernel spends about 5 s of CPU importing numpy, PyTorch and TensorFlow: most
of what grading one submission costs. So each grading worker keeps a fork server, a
process started with the kernel's own environment (`sandbox.kernel_env`) that imports
those libraries once (`PRELOAD`) and then forks a child for every kernel nbgrader starts.
The child enters the sandbox exactly as the launcher would (`sandbox.enter`: hidden
folders, no network, limits, the sandbox user, the scratch folder) and becomes the
ipykernel in-process, its libraries already in ``sys.modules`` and their memory shared
copy-on-write with the server.

nbgrader still starts the kernel spec's launcher (``python -m autograde.sandbox``). When
its settings name a fork server, the launcher hands the server its standard streams and
the connection file over a Unix socket only the grader can open
(`forkprotocol.run_kernel`), then stands in for the kernel: it passes on the signals
jupyter_client sends it (an interrupt) and exits as the kernel exits. When the launcher
is killed (a timeout, the immediate shutdown after the last cell), the server kills the
kernel and its process group; when the server dies, its kernel dies with it. A launcher
that finds no server starts the kernel itself, at the usual cost.

The server is run as ``python -m autograde.forkserver SETTINGS.json READY_FD`` by
`ForkServer`, which waits for it to say it is ready.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from . import forkprotocol, sandbox, view

# What a chapter imports that is worth importing once (course.runtime's helper loads
# TensorFlow after Triton, as the notebooks do); a library not installed is skipped.
PRELOAD = ("numpy", "torch", "tensorflow", "course.checks", "ipykernel.kernelapp")
# What in an assignment's code says its kernels import a library of PRELOAD: the library's
# name, or Keras's for TensorFlow (runtime.import_keras, course.tf); numpy and course.checks
# come with any framework and with the course library.
_NAMED_BY = {
    "numpy": ("numpy", "torch", "tensorflow", "keras", "course"),
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "keras", "course.tf"),
    "course.checks": ("course",),
}
PR_SET_PDEATHSIG = 1
START_TIMEOUT = 300.0  # seconds for the server to import everything
ROOM = 0.5  # at most this part of a kernel's address-space limit may go to preloading


def _die_with_parent() -> None:
    """Be killed when the process (thread) that started this one ends."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def preload(modules=PRELOAD) -> list[str]:
    """Import `modules`; the names imported."""
    loaded = []
    for name in modules:
        try:
            if name == "tensorflow":
                from course import runtime

                runtime.import_tensorflow()
            else:
                importlib.import_module(name)
        except Exception:  # not installed (or broken): the kernels import what they need
            continue
        loaded.append(name)
    return loaded


def wanted(sources, modules=PRELOAD) -> tuple[str, ...]:
    """The part of `modules` worth preloading for kernels that run the code `sources`: each
    library the code names (see `_NAMED_BY`), and ipykernel with them; nothing at all when it
    names none of them, for kernels that import nothing heavy start as fast on their own
    (and a server holds ~700 MB per worker). A library the code imports in a way not seen
    here is imported by the kernel itself: slower, never wrong."""
    code = "\n".join(sources)
    chosen = [name for name in modules if any(word in code for word in _NAMED_BY.get(name, ()))]
    if not chosen:
        return ()
    return tuple(name for name in modules if name in chosen or name not in _NAMED_BY)


# --- the server ------------------------------------------------------------------------------


def serve(settings_file: Path, ready_fd: int, modules=PRELOAD) -> None:
    """Import `modules`, say so on `ready_fd`, then fork one kernel at a time, forever."""
    settings = sandbox.Settings.read(settings_file)
    _die_with_parent()
    loaded = preload(modules)
    os.umask(0o077)  # the socket: the grader's only
    path = Path(settings.fork_server)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    gc.collect()
    gc.freeze()  # kernels that collect garbage leave the server's objects (and pages) alone
    ready = {"loaded": loaded, "mapped_mb": _address_space_mb("self")}
    os.write(ready_fd, json.dumps(ready).encode() + b"\n")
    os.close(ready_fd)
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                _serve_one(conn, server, settings)
            except (OSError, ValueError):  # a launcher gone before it asked, or
                pass  # a request that is not one: nothing was started


def _serve_one(conn: socket.socket, server: socket.socket, settings: sandbox.Settings) -> None:
    conn.settimeout(10.0)
    data, fds, _, _ = socket.recv_fds(conn, 65536, forkprotocol.STREAMS)
    try:
        while b"\n" not in data:
            more = conn.recv(65536)
            if not more:
                return
            data += more
        conn.settimeout(None)
        line, pending = data.split(b"\n", 1)
        connection_file = forkprotocol.read_request(line)
        if len(fds) != forkprotocol.STREAMS:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become_kernel(settings, connection_file, fds, [server, conn])
    finally:
        for fd in fds:
            os.close(fd)
    try:
        conn.sendall(forkprotocol.started(pid))
        _supervise(conn, pid, pending)
    finally:
        _kill_group(pid)


def _supervise(conn: socket.socket, pid: int, pending: bytes) -> None:
    """Pass signals from the launcher on to the kernel until one of the two ends."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            for signum in pending:
                if signum in forkprotocol.RELAYED:
                    _signal_group(pid, signum)
            ready, _, _ = select.select([conn, pidfd], [], [])
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):
                    conn.sendall(forkprotocol.exited(os.waitstatus_to_exitcode(status)))
                return
            try:
                pending = conn.recv(64)
            except OSError:
                pending = b""
            if not pending:  # the launcher is gone (killed): so goes the kernel
                return
    finally:
        os.close(pidfd)


def _signal_group(pid: int, signum: int) -> None:
    """Signal the kernel's process group, as jupyter_client signals a launcher's."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:  # the kernel has not made its group yet
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _kill_group(pid: int) -> None:
    """Kill the kernel and what it started in its group; reap the kernel."""
    _signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _become_kernel(settings, connection_file: str, fds: list[int], sockets) -> None:
    """In the forked child: enter the sandbox and run ipykernel; never returns."""
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        for target, fd in enumerate(fds):  # the launcher's stdin, stdout and stderr
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        for sock in sockets:  # the student gets no way back to the server
            sock.close()
        for signum in forkprotocol.RELAYED:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        connection = sandbox.enter(settings, connection_file)
        sys.path[0] = settings.scratch  # as for `python -m ipykernel_launcher` run there
        sys.argv = [sys.argv[0], "-f", str(connection), *sandbox.KERNEL_ARGS]
        tempfile.tempdir = None
        if "numpy" in sys.modules:  # a kernel of its own draws its own seed at import
            sys.modules["numpy"].random.seed()
        from ipykernel import kernelapp

        kernelapp.launch_new_instance(argv=sys.argv[1:])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# --- the grader's side -------------------------------------------------------------------


def _address_space_mb(pid: int | str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) / 1024
    return 0.0


class ForkServer:
    """One worker's fork server: `start()` returns once it has imported `modules` (or has
    failed: see `error`), or `launch()` now and `wait_ready()` later, the imports done
    meanwhile; `close()` stops it and any kernel it runs."""

    def __init__(self, settings: sandbox.Settings, settings_file: Path, base_env, log: Path,
                 modules=PRELOAD):  # fmt: skip
        self.modules = tuple(modules)
        self.settings = settings
        self.settings_file = Path(settings_file)
        self.env = sandbox.kernel_env(settings, base_env)
        self.log = Path(log)
        self.proc: subprocess.Popen | None = None
        self.loaded: list[str] = []
        self.error = ""
        self._ready_fd: int | None = None  # launched, its "ready" line not read yet

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> bool:
        """Start the server and wait until it is ready; whether it is (if not, `error`
        says why and kernels start without it)."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the server without waiting for it: it imports while the caller goes on;
        `wait_ready` before the first kernel."""
        self.close()
        self.error = ""
        read_end, write_end = os.pipe()
        command = [sys.executable, "-m", "autograde.forkserver", str(self.settings_file)]
        command += [str(write_end), *self.modules]
        if self.settings.use_view:  # the server, and every kernel it forks, in the view
            command = view.command(self.settings, command, [self.settings_file])
        try:
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    command,
                    cwd=Path(self.settings.fork_server).parent,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(write_end,),
                    start_new_session=True,  # Ctrl-C at the terminal is the grader's
                )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._ready_fd = read_end

    def wait_ready(self, timeout: float = START_TIMEOUT) -> bool:
        """Wait until the launched server has imported everything; whether it has (if not,
        `error` says why, the server is stopped and kernels start without it). Once ready,
        it stays so: asking again returns at once."""
        if self._ready_fd is None:
            return self.alive() and not self.error
        with os.fdopen(self._ready_fd, "rb") as ready:
            self._ready_fd = None
            found, _, _ = select.select([ready], [], [], timeout)
            line = ready.readline() if found else b""
        if line.endswith(b"\n"):
            ready = json.loads(line)
            self.loaded = ready["loaded"]
            # A forked kernel starts with the server's address space, which counts against
            # its memory limit: the libraries must leave the student's code room to work.
            mapped = ready["mapped_mb"]
            allowed = self.settings.limits.memory_mb
            if mapped <= allowed * ROOM:
                return True
            self.close()
            self.error = (
                f"not preloading: the preloaded libraries map {mapped:.0f} MB, more than "
                f"{ROOM:.0%} of each kernel's {allowed} MB address-space limit"
            )
            return False
        self.close()
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        self.error = "the fork server did not start" + (": " + " | ".join(tail) if tail else "")
        return False

    def close(self) -> None:
        if self._ready_fd is not None:
            os.close(self._ready_fd)
            self._ready_fd = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
        with contextlib.suppress(FileNotFoundError, TypeError):
            Path(self.settings.fork_server).unlink()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        sys.exit("usage: python -m autograde.forkserver SETTINGS.json READY_FD [MODULE ...]")
    serve(Path(argv[0]), int(argv[1]), argv[2:] or PRELOAD)


if __name__ == "__main__":
    main()

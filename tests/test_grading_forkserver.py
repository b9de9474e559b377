"""The grading fork server (autograde/forkserver.py), driven the way nbgrader drives it:
jupyter_client starts the sandbox kernel spec's launcher, which has the worker's fork
server fork the kernel. Preloaded modules, signals passed on, exit statuses passed back,
nothing left running, and a kernel that still starts when there is no server.

The server here preloads only numpy (a second, not six): test_grading_class.py grades a
whole chapter-00 class through the full preload.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from autograde import forkprotocol, forkserver, sandbox


def _gone(pid: int, within: float = 15.0) -> bool:
    """Whether process `pid` has exited (or is a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


class Worker:
    """One worker's sandbox settings, kernel spec and (maybe) fork server, in tmp_path."""

    def __init__(self, tmp_path: Path, with_server: bool):
        self.parent = sandbox.scratch_parent(0)  # short enough for the kernel's sockets
        self.settings = sandbox.Settings(
            scratch=str(self.parent / "work"),
            repo=str(REPO),
            python_path=[str(REPO)],
            fork_server=str(self.parent / "fork-server"),
        )
        self.settings_file = tmp_path / "sandbox.json"
        self.settings.write(self.settings_file)
        self.specs = sandbox.kernel_spec(tmp_path / "jupyter", self.settings_file) / "kernels"
        self.log = tmp_path / "fork.log"
        self.server = forkserver.ForkServer(
            self.settings, self.settings_file, os.environ, self.log, modules=("numpy",)
        )
        if with_server:
            assert self.server.start(timeout=120), self.server.error
            assert self.server.loaded == ["numpy"]
        self.managers: list[KernelManager] = []

    def kernel(self):
        """A started kernel and its client, as nbgrader would start one."""
        sandbox.prepare_scratch(self.settings, None)
        km = KernelManager(
            kernel_name=sandbox.KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(self.specs)]),
            transport="ipc",
            ip=str(Path(self.settings.scratch) / ".ipc"),
        )
        km.start_kernel(cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
        self.managers.append(km)
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        return km, kc

    def close(self):
        for km in self.managers:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
        self.server.close()
        shutil.rmtree(self.parent, ignore_errors=True)


def run(kc, code: str, timeout: float = 60.0) -> tuple[str, dict]:
    """Run `code` in the kernel: (what it printed, the execute reply's content)."""
    printed = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return "".join(printed), reply["content"]


@pytest.fixture
def worker(tmp_path, request):
    w = Worker(tmp_path, with_server=request.param)
    yield w
    w.close()


WHO = "import os, sys\nprint(os.getpid(), os.getppid(), 'numpy' in sys.modules, os.getcwd())"


@pytest.mark.parametrize("worker", [True, False], ids=["fork-server", "unaided"], indirect=True)
def test_a_kernel_is_forked_preloaded_or_starts_unaided(worker):
    km, kc = worker.kernel()
    printed, reply = run(kc, WHO)
    assert reply["status"] == "ok", reply
    pid, ppid, preloaded, cwd = printed.split()
    launcher = km.provisioner.pid
    assert cwd == worker.settings.scratch  # the sandbox was entered either way
    if worker.server.alive():
        assert preloaded == "True" and int(pid) != launcher
        assert int(ppid) == worker.server.proc.pid  # the server's child, not the launcher
    else:  # no server listening: the launcher became the kernel itself
        assert preloaded == "False" and int(pid) == launcher
    # The student's `import` of a preloaded module works, and the kernel computes.
    printed, reply = run(kc, "import numpy as np\nprint(int(np.arange(5).sum()))")
    assert (printed.strip(), reply["status"]) == ("10", "ok"), reply


@pytest.mark.parametrize("worker", [True], ids=["fork-server"], indirect=True)
def test_an_interrupt_reaches_the_kernel_and_a_killed_launcher_takes_it_along(worker):
    km, kc = worker.kernel()
    printed, _ = run(kc, WHO)
    kernel = int(printed.split()[0])
    started = time.monotonic()
    # stop_on_error=False: the interrupted cell's error must not make ipykernel abort the
    # request sent right after its reply (it did, once, on a loaded machine: "aborted").
    msg_id = kc.execute("import time\ntime.sleep(120)", stop_on_error=False)
    time.sleep(1.0)
    km.interrupt_kernel()  # SIGINT to the launcher's group, passed on by the launcher
    reply = kc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    assert time.monotonic() - started < 30
    # The kernel lived: it computes and answers. (Asked through the reply, not a print:
    # right after an interrupt, ipykernel may send a print under the interrupted cell's
    # header, which a loaded machine showed.)
    reply = kc.execute_interactive("answer = 6 * 7", user_expressions={"a": "answer"}, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert reply["content"]["user_expressions"]["a"]["data"]["text/plain"] == "42"
    # nbgrader's immediate shutdown kills the launcher; the server kills the kernel.
    km.shutdown_kernel(now=True)
    assert _gone(kernel), "the kernel outlived its launcher"
    assert worker.server.alive()  # and the server serves the next one
    km2, kc2 = worker.kernel()
    printed, _ = run(kc2, WHO)
    assert int(printed.split()[0]) != kernel


@pytest.mark.parametrize("worker", [True], ids=["fork-server"], indirect=True)
def test_the_kernels_exit_status_is_the_launchers(worker):
    km, kc = worker.kernel()
    kc.execute("import os\nos._exit(7)")
    deadline = time.monotonic() + 30
    while km.provisioner.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert km.provisioner.process.poll() == 7  # jupyter_client sees a kernel that died


@pytest.mark.parametrize("worker", [True], ids=["fork-server"], indirect=True)
def test_a_server_that_stops_takes_its_kernel_along(worker):
    km, kc = worker.kernel()
    printed, _ = run(kc, WHO)
    kernel, launcher = int(printed.split()[0]), km.provisioner.pid
    worker.server.close()
    assert _gone(kernel), "the kernel outlived its fork server"
    assert _gone(launcher), "the launcher outlived its kernel"
    assert not Path(worker.settings.fork_server).exists()


@pytest.mark.parametrize("worker", [True], ids=["fork-server"], indirect=True)
def test_requests_that_are_not_requests_leave_the_server_serving(worker):
    for junk in (b"", b"not json\n", b'{"connection_file": "/nonexistent"}\n', b"{}\n"):
        with socket.socket(socket.AF_UNIX) as sock:  # no descriptors passed along
            sock.connect(worker.settings.fork_server)
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(15)
            assert sock.recv(100) == b"", junk  # closed without starting anything
    for junk in (b"[]\n", b'{"connection_file": 7}\n', b"\xff\n"):
        with socket.socket(socket.AF_UNIX) as sock, open(os.devnull, "rb+") as null:
            sock.connect(worker.settings.fork_server)  # three streams, as a launcher sends
            socket.send_fds(sock, [junk], [null.fileno()] * forkprotocol.STREAMS)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(15)
            assert sock.recv(100) == b"", junk
    assert worker.server.alive()
    _, kc = worker.kernel()
    _, reply = run(kc, "x = 1")
    assert reply["status"] == "ok"


def test_a_server_that_cannot_start_says_why(tmp_path):
    settings = sandbox.Settings(scratch=str(tmp_path / "work"), repo=str(REPO),
                                fork_server=str(tmp_path / "fs"))  # fmt: skip
    broken = tmp_path / "sandbox.json"
    broken.write_text("{ not json")
    server = forkserver.ForkServer(settings, broken, os.environ, tmp_path / "fork.log")
    assert server.start(timeout=60) is False
    assert "did not start" in server.error and "JSONDecodeError" in server.error, server.error
    assert not server.alive()


def test_without_a_server_the_launcher_is_told_to_start_the_kernel_itself(tmp_path):
    """A socket path nobody listens on: `run_kernel` says so (None) instead of waiting."""
    started = time.monotonic()
    assert forkprotocol.run_kernel(str(tmp_path / "nobody"), "conn.json") is None
    assert time.monotonic() - started < 5


# --- what a grading run preloads ---------------------------------------------------------------


def test_a_course_preloads_only_the_libraries_its_code_names(toy_course):
    from autograde.grade import preload_for

    solutions, _ = toy_course
    every = forkserver.PRELOAD
    # The toy imports nothing heavy: no server at all, its kernels start in about a second.
    assert preload_for(True, solutions, ["99_toy"]) == ()
    assert forkserver.wanted(["x = 1", "# numbers only"]) == ()
    # Chapter 00 compares numpy, PyTorch and TensorFlow: everything.
    assert preload_for(True, REPO / "solutions", ["00_setup"]) == every
    # PyTorch alone: no TensorFlow (~700 MB less per worker).
    torch_only = forkserver.wanted(["import torch\nx = torch.ones(2)"])
    assert "torch" in torch_only and "numpy" in torch_only
    assert "tensorflow" not in torch_only and "ipykernel.kernelapp" in torch_only
    # TensorFlow reached through Keras or the course's helper counts as TensorFlow.
    assert "tensorflow" in forkserver.wanted(["from course import runtime\nruntime.import_keras()"])
    assert "torch" not in forkserver.wanted(["import keras"])
    # Asked for by name, or turned off: exactly that.
    assert preload_for(("numpy",), solutions, ["99_toy"]) == ("numpy",)
    assert preload_for(False, REPO / "solutions", ["00_setup"]) == ()

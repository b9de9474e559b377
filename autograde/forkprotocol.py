"""What a kernel launcher and its worker's fork server say to each other, and the
launcher's side of it.

The launcher (`autograde.sandbox`, run by nbgrader from the kernel spec) connects to the
server's Unix socket (`autograde.forkserver`) and sends one request line, JSON naming the
kernel's connection file, with its standard input, output and error passed along on the
socket. The server forks the kernel and answers ``started PID``; when the kernel has
ended it answers ``exit STATUS`` (negative: killed by that signal). Until then every byte
the launcher sends is a signal number for the kernel (one of `RELAYED`), and the launcher
closing its end (it was killed) makes the server kill the kernel.

Both sides import this module and it imports neither, so the launcher and the server
need nothing from each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

# The signals jupyter_client may send a kernel's launcher, passed on to the kernel.
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2)  # fmt: skip
STREAMS = 3  # the launcher's stdin, stdout and stderr travel with its request


def request(connection_file: str) -> bytes:
    """The launcher's request line: start a kernel on this connection file."""
    return json.dumps({"connection_file": str(connection_file)}).encode() + b"\n"


def read_request(line: bytes) -> str:
    """The connection file a request line names; ValueError if it is not a request."""
    request = json.loads(line)
    if not isinstance(request, dict) or not isinstance(request.get("connection_file"), str):
        raise ValueError(f"not a kernel request: {line[:100]!r}")
    return request["connection_file"]


def started(pid: int) -> bytes:
    """The server's reply once the kernel is forked."""
    return f"started {pid}\n".encode()


def exited(status: int) -> bytes:
    """The server's reply once the kernel has ended (negative: killed by that signal)."""
    return f"exit {status}\n".encode()


# --- the launcher's side -----------------------------------------------------------------


def run_kernel(socket_path: str, connection_file: str) -> int | None:
    """Have the fork server at `socket_path` start the kernel with this process's standard
    streams, pass signals on to it and wait for it: its exit status (negative: killed by
    that signal), or None when no server started it (start it yourself)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError:
        sock.close()
        return None

    def relay(signum, _frame):
        with contextlib.suppress(OSError):
            sock.send(bytes([signum]))

    for signum in RELAYED:
        signal.signal(signum, relay)
    replies = b""
    is_started = False
    try:
        socket.send_fds(sock, [request(connection_file)], list(range(STREAMS)))
        while True:
            while b"\n" in replies:
                line, replies = replies.split(b"\n", 1)
                word, _, value = line.decode().partition(" ")
                if word == "started":
                    is_started = True
                elif word == "exit":
                    return int(value)
            chunk = sock.recv(4096)
            if not chunk:
                break
            replies += chunk
    except OSError:
        pass
    finally:
        sock.close()
    # The server went away: before the fork, start the kernel here; after, the kernel died
    # with it.
    return -signal.SIGKILL if is_started else None


def exit_like(status: int) -> None:
    """Exit as a process with this exit status would (negative: killed by that signal)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        status = 128 - status
    os._exit(status)

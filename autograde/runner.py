"""One nbgrader process that autogrades submission after submission.

Starting ``python -m nbgrader autograde`` costs about 3 s of CPU before the first cell
runs (nbgrader, nbconvert and SQLAlchemy are imported again each time), as much as a
chapter-00 submission takes to run. A grading worker instead keeps one `Runner`: a child
process (``python -m autograde.runner COURSE_ROOT``) that imports nbgrader once and
autogrades each submission it is sent through nbgrader's own API, the one its formgrader
uses. What stays per submission: a fresh kernel (in the sandbox) and a fresh converter.

The child talks to the grader on a pipe of its own. Its standard input is /dev/null and
its standard output and error go to the current submission's log file, and so do those
of the kernels it starts: nothing a student cell writes can reach the pipe. A submission
that runs past its time limit, or a child that dies, costs the child: it is killed with
every process under it and the next submission starts a new one.

The same child also writes feedback pages (`generate_feedback`, a few students at a time):
the report keeps one beside the workers, so pages are made while the class is graded.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from .workspace import Result, kill_tree, tool_env


class Runner:
    """The grader's side: ``autograde(assignment, student, log, timeout)`` -> `Result`."""

    def __init__(self, course_root: Path, env: dict[str, str] | None = None):
        self.course_root = Path(course_root)
        self.env = {**tool_env(), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._replies = b""

    def _start(self) -> None:
        read_end, write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autograde.runner", str(self.course_root), str(write_end)],
                cwd=self.course_root,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(write_end,),
                start_new_session=True,  # its own group, like a single nbgrader run
            )
        finally:
            os.close(write_end)
        self._reply_fd = read_end
        self._replies = b""

    def start(self) -> None:
        """Start the child unless it runs: now, so that it imports nbgrader while the caller
        does other work (a request starts it anyway)."""
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()

    def autograde(self, assignment: str, student: str, log: Path, timeout: float) -> Result:
        """Autograde one submission already in ``submitted/``; its output goes to ``log``."""
        log.write_bytes(b"")
        return self._request("autograde", assignment, student, log, timeout)

    def generate_feedback(self, assignment: str, student: str | None, log: Path,
                          timeout: float) -> Result:  # fmt: skip
        """The feedback pages of a student's notebooks already in ``autograded/`` (every
        student's there: None); its output is added to the end of ``log`` (one log for many
        students) and is the result's output."""
        return self._request("generate_feedback", assignment, student, log, timeout)

    def _request(self, command: str, assignment: str, student: str | None, log: Path,
                 timeout: float) -> Result:  # fmt: skip
        """Have the child run nbgrader's `command` for one student; only what this request
        added to ``log`` is the result's output."""
        with log.open("ab") as fh:
            before = fh.tell()
        self.start()
        request = {"command": command, "assignment": assignment, "student": student,
                   "log": str(log)}  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
            except BrokenPipeError:  # it died since the check above: read the end of it
                pass
            reply = self._read_reply(deadline)
        except BaseException:  # Ctrl-C or any error here: leave no nbgrader or kernel behind
            self.close()
            raise
        with log.open("rb") as fh:
            fh.seek(before)
            output = fh.read().decode(errors="replace")
        if reply is None:
            timed_out = time.monotonic() >= deadline
            self.close()
            if timed_out:
                return Result(-9, output + f"\n[killed after {timeout:.0f} s]", timed_out=True)
            return Result(-1, output + "\n[the nbgrader process died]")
        return Result(0 if reply.get("success") else 1, output)

    def _read_reply(self, deadline: float) -> dict | None:
        while b"\n" not in self._replies:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._reply_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._reply_fd, 65536)
                if not chunk:  # the child is gone
                    return None
                self._replies += chunk
        line, self._replies = self._replies.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        """Kill the child and every process under it, from any thread: a submission being
        graded ends as if its nbgrader process had died."""
        proc = self.proc
        if proc is not None:
            kill_tree(proc)

    def close(self) -> None:
        """Stop the child and every process under it."""
        if self.proc is not None:
            self.kill()
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait()
            os.close(self._reply_fd)
            self.proc = None


# --- the child ------------------------------------------------------------------------------

# What the grader may ask the child for: these of nbgrader's API methods, no other.
COMMANDS = frozenset({"autograde", "generate_feedback"})


def _serve(course_root: Path, reply_fd: int) -> None:
    from .startup import prepare_nbgrader

    prepare_nbgrader()
    from nbgrader.apps.api import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    requests = os.fdopen(os.dup(0), "rb")  # dup'ed: not inherited by the kernels
    os.set_inheritable(reply_fd, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_root)).load_config()
    api = NbGraderAPI(config=config)
    for line in requests:
        request = json.loads(line)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 1)  # this process's and its kernels' output: the submission's log
        os.dup2(log, 2)
        os.close(log)
        command = request["command"]
        if command not in COMMANDS:
            raise ValueError(f"not an nbgrader command the grader asks for: {command!r}")
        result = getattr(api, command)(request["assignment"], request["student"], force=True)
        text = result.get("log", "") + result.get("error", "")
        sys.stdout.flush()
        sys.stderr.flush()
        with open(request["log"], "a") as fh:
            fh.write(text)
        reply = json.dumps({"success": bool(result.get("success"))}).encode() + b"\n"
        os.write(reply_fd, reply)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]))

"""The workers that autograde a class's submissions, several at once.

Each worker is a thread with a course folder of its own (nbgrader's files for every
assignment graded), a `Runner` (one nbgrader process for all its submissions), a
sandbox user when the grader runs as root, and, unless preloading is off, a fork server
its kernels are forked from (`autograde.forkserver`). It takes submissions from a queue
one at a time: copies one into its course folder, has nbgrader autograde it in a fresh
sandboxed kernel, kills whatever the kernel left running, and turns the result into the
submission's row (`autograde.grades.Row`). A graded notebook is kept in
``OUT/autograded/`` for its feedback page.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from . import forkserver, notebooks, sandbox, submission
from .gradebook import Gradebook
from .grades import Row
from .options import GradeOptions
from .runner import Runner
from .workspace import REPO, CourseFolder

# (student, assignment, submission folder): a submission waiting for a worker
Submission = tuple[str, str, Path]


class Worker:
    """Grades submissions one at a time in its own course folder and sandbox."""

    def __init__(self, index: int, options: GradeOptions):
        self.index = index
        self.options = options
        self.book = Gradebook(options.db_url)
        self.user = sandbox.SandboxUser() if os.geteuid() == 0 else None
        uid, gid = (self.user.uid, self.user.gid) if self.user else (None, None)
        self.uid = uid
        self.scratch_parent = sandbox.scratch_parent(index)
        scratch = self.scratch_parent / "work"
        self.course = CourseFolder(exec_timeout=options.cell_timeout, db_url=options.db_url)
        self.settings = sandbox.Settings(
            scratch=str(scratch),
            repo=str(REPO),
            python_path=[str(REPO)],
            uid=uid,
            gid=gid,
            hide=[*options.hide, str(self.course.root)],
            limits=options.limits,
            fork_server=str(self.scratch_parent / "fork-server") if options.preload else None,
        )
        settings_file = self.course.root / "sandbox.json"
        self.settings.write(settings_file)
        self.jupyter_path = sandbox.kernel_spec(self.course.root / "jupyter", settings_file)
        with (self.course.root / "nbgrader_config.py").open("a") as fh:
            fh.write(
                f"c.Execute.kernel_name = {sandbox.KERNEL_NAME!r}\n"
                "c.KernelManager.transport = 'ipc'\n"  # Unix sockets: no network needed
                f"c.KernelManager.ip = {str(scratch / '.ipc')!r}\n"
                "c.Execute.interrupt_on_timeout = True\n"
                # Every output is in once the last cell ran: stop the kernel at once rather
                # than wait seconds for TensorFlow's and PyTorch's teardown at exit.
                "c.Execute.shutdown_kernel = 'immediate'\n"
            )
        for name in options.assignments:
            self.course.add_source(name, options.solutions)
        self.runner = Runner(self.course.root, env={"JUPYTER_PATH": str(self.jupyter_path)})
        self.fork_server = None
        if options.preload:  # kernels forked with numpy, PyTorch and TensorFlow imported
            self.fork_server = forkserver.ForkServer(
                self.settings, settings_file, self.runner.env, self.course.root / "fork.log",
                options.preload,
            )  # fmt: skip
            self.fork_server.start()

    def close(self) -> None:
        self.runner.close()
        if self.fork_server is not None:
            self.fork_server.close()
        if self.uid is not None:
            sandbox.kill_user(self.uid)
            self.user.release()
        self.course.__exit__(None, None, None)
        shutil.rmtree(self.scratch_parent, ignore_errors=True)

    def grade(self, student: str, assignment: str, folder: Path) -> Row:
        """Autograde one submission; the row it ends as."""
        options, root = self.options, self.course.root
        dest = root / "submitted" / student / assignment
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        # Read without following links (checked before, read safely again here).
        names = [nb.name for nb in folder.glob("*.ipynb")]
        if (folder / "timestamp.txt").is_file():
            names.append("timestamp.txt")
        try:
            for name in names:
                (dest / name).write_bytes(submission.read_handed_in(folder / name))
        except submission.RefusedFile as err:  # swapped for a link since it was checked
            row = Row(student, assignment, 0.0, self.book.max_score(assignment), "ok")
            return row.failed("refused-file", str(err))
        graded = root / "autograded" / student / assignment
        shutil.rmtree(graded, ignore_errors=True)
        sandbox.prepare_scratch(self.settings, options.release / assignment)
        server = self.fork_server
        if server is not None and not server.error and not server.alive():
            server.start()  # it died (killed from outside): once more, or kernels go unaided
        try:
            log = options.out / "logs" / f"{student}__{assignment}.log"
            result = self.runner.autograde(assignment, student, log, options.timeout)
        finally:
            if self.uid is not None:
                sandbox.kill_user(self.uid)  # forks and sleepers the kernel left
            shutil.rmtree(self.settings.scratch, ignore_errors=True)
        max_score = self.book.max_score(assignment)
        found = self.book.result(assignment, student)
        score, stamp, late = found if found else (0.0, "", 0.0)
        row = Row(student, assignment, score, max_score, "ok", stamp, late)
        if result.timed_out:
            return row.failed("timeout", f"the notebook ran past {options.timeout:g} s")
        if found is None or not graded.is_dir():
            # nbgrader records a zero before running anything and removes the autograded
            # folder when grading fails (a dead kernel, say): that is not a score.
            return row.failed(*failure(result.output))
        for nb in sorted(graded.glob("*.ipynb")):
            hit = submission.limit_hit(notebooks.read(nb))
            if hit:
                return row.failed(*hit)
        keep = options.out / "autograded" / student / assignment  # for feedback, now or later
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(graded, keep)
        return row


def run_workers(
    to_run: queue.Queue[Submission],
    options: GradeOptions,
    record: Callable[[Row], None],
    log: Callable[[str], None],
) -> None:
    """Grade every submission in `to_run` with up to ``options.workers`` workers, each row
    handed to `record` as it is decided. The first error in a worker stops them all and is
    raised here; on Ctrl-C every running kernel is killed and no half-graded row recorded."""
    errors: list[BaseException] = []
    live: list[Worker] = []

    def work(index: int) -> None:
        worker = None
        try:
            worker = Worker(index, options)
            if worker.fork_server is not None and worker.fork_server.error:
                log(f"worker {index}: {worker.fork_server.error}; kernels import on their own")
            live.append(worker)
            while not errors:
                try:
                    student, assignment, folder = to_run.get_nowait()
                except queue.Empty:
                    return
                log(f"{student}/{assignment}: autograding")
                row = worker.grade(student, assignment, folder)
                if errors:  # stopped while it ran: not a grade; the next run redoes it
                    return
                record(row)
        except BaseException as err:  # stop the others; re-raised in the main thread
            errors.append(err)
        finally:
            if worker is not None:
                worker.close()

    count = min(options.workers, to_run.qsize())
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except BaseException:  # Ctrl-C: stop every kernel now; the workers clean up and leave
        errors.append(KeyboardInterrupt())
        for worker in list(live):
            worker.runner.kill()
        for thread in threads:
            thread.join(30)
        raise
    real = [e for e in errors if not isinstance(e, KeyboardInterrupt)]
    if real:
        raise real[0]


def failure(output: str) -> tuple[str, str]:
    """(status, note) of a submission nbgrader could not grade, read from its log.

    A cell past its time limit is interrupted; when the kernel is too busy to answer the
    interrupt in time, nbgrader gives up on the whole notebook ("Timeout waiting for IOPub
    output") instead of scoring it: that is still the cell's timeout, not an error.
    """
    if "DeadKernelError" in output or "Kernel died" in output:
        return "kernel-died", "the kernel died; see the log"
    if "Timeout waiting for execute reply" in output or "CellTimeoutError" in output:
        return "timeout", "a cell ran past the cell time limit and did not stop; see the log"
    return "error", "nbgrader could not grade it; see the log"

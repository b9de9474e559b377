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
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from . import cgroup, forkserver, notebooks, sandbox, submission
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
        self.group = None  # memory and processes of a kernel's whole tree (root only)
        if uid is not None:
            name, memory_mb = f"twin-gpt-sandbox-{uid}", options.limits.memory_mb
            self.group = cgroup.KernelGroup(name, memory_mb)
        self.settings = sandbox.Settings(
            scratch=str(scratch),
            repo=str(REPO),
            python_path=[str(REPO)],
            uid=uid,
            gid=gid,
            hide=[*options.hide, str(self.course.root)],
            limits=options.limits,
            fork_server=str(self.scratch_parent / "fork-server") if options.preload else None,
            use_view=sandbox.view_tries() is not None,
            cgroups=[str(f) for f in self.group.folders] if self.group else [],
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
        self.stopped = False  # by `stop`: the run is over, whatever is being graded
        self.fork_server = None
        if options.preload:  # kernels forked with numpy, PyTorch and TensorFlow imported
            self.fork_server = forkserver.ForkServer(
                self.settings, settings_file, self.runner.env, self.course.root / "fork.log",
                options.preload,
            )  # fmt: skip
            self.fork_server.launch()  # it imports while the grader does other work

    def ready(self) -> str:
        """Wait for the fork server to have imported its libraries; why it has not ("" when
        it has, or when there is none): then kernels import on their own."""
        if self.fork_server is None or self.fork_server.wait_ready():
            return ""
        return self.fork_server.error

    def _run(self, student: str, assignment: str, log: Path, graded: Path):
        """One nbgrader autograde run of the submission in ``submitted/``, in a fresh
        scratch folder and kernel; whatever the kernel left behind killed after it."""
        shutil.rmtree(graded, ignore_errors=True)
        sandbox.prepare_scratch(self.settings, self.options.release / assignment)
        server = self.fork_server
        if server is not None and not server.error and not server.alive():
            server.start()  # it died (killed from outside): once more, or kernels go unaided
        try:
            return self.runner.autograde(assignment, student, log, self.options.timeout)
        finally:
            if self.uid is not None:
                sandbox.kill_user(self.uid)  # forks and sleepers the kernel left
            shutil.rmtree(self.settings.scratch, ignore_errors=True)

    def stop(self) -> None:
        """From any thread: kill the submission being graded (its nbgrader process and
        kernel), which then ends as if that process had died, and is not retried."""
        self.stopped = True
        self.runner.kill()

    def close(self) -> None:
        self.runner.close()
        if self.fork_server is not None:
            self.fork_server.close()
        if self.uid is not None:
            sandbox.kill_user(self.uid)
            if self.group is not None:
                self.group.close()
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
        import nbformat

        seed = secrets.randbits(48)  # the canaries' numbers: new for every submission
        borrowed: dict[str, dict[str, list[str]]] = {}  # notebook -> library answers
        try:
            for name in names:
                data = submission.read_handed_in(folder / name)
                if name.endswith(".ipynb"):  # checks whose outcome the grader knows
                    handed_in = notebooks.parse(data, name)
                    borrowed[name] = self._library_answers(assignment, name, handed_in)
                    data = nbformat.writes(submission.add_canaries(handed_in, seed)).encode()
                (dest / name).write_bytes(data)
        except submission.RefusedFile as err:  # swapped for a link since it was checked
            row = Row(student, assignment, 0.0, self.book.max_score(assignment), "ok")
            return row.failed("refused-file", str(err))
        graded = root / "autograded" / student / assignment
        log = options.out / "logs" / f"{student}__{assignment}.log"
        oom_kills = self.group.oom_kills() if self.group else 0
        for attempt in range(1 + RETRIES):
            result = self._run(student, assignment, log, graded)
            if self.stopped:  # its nbgrader process was killed for Ctrl-C: no retry
                break
            if attempt < RETRIES and not result.timed_out and infrastructure_failure(result):
                continue  # the machine's hiccup, not the student's: once more
            break
        max_score = self.book.max_score(assignment)
        found = self.book.result(assignment, student)
        score, stamp, late = found if found else (0.0, "", 0.0)
        row = Row(student, assignment, score, max_score, "ok", stamp, late)
        if self.group is not None and self.group.oom_kills() > oom_kills:
            memory_mb = options.limits.memory_mb  # a process of its tree was killed for it
            return row.failed("memory-limit", f"the kernel and the processes it started used "
                              f"more than {memory_mb} MB of memory together")  # fmt: skip
        if result.timed_out:
            return row.failed("timeout", f"the notebook ran past {options.timeout:g} s")
        if found is None or not graded.is_dir():
            # nbgrader records a zero before running anything and removes the autograded
            # folder when grading fails (a dead kernel, say): that is not a score.
            return row.failed(*failure(result.output))
        for nb in sorted(graded.glob("*.ipynb")):
            executed = notebooks.read(nb)
            problem = (
                submission.limit_hit(executed)
                or submission.canary_problem(executed)
                or submission.environment_problem(executed)
            )
            if problem:
                return row.failed(*problem)
            nb.write_text(nbformat.writes(submission.strip_canaries(executed)))
        keep = options.out / "autograded" / student / assignment  # for feedback, now or later
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(graded, keep)
        return self._without_library_answers(row, borrowed)

    def _library_answers(self, assignment: str, name: str, handed_in) -> dict[str, list[str]]:
        """{answer cell: course objects it borrowed} of one handed-in notebook; {} when the
        instructor allows the library's answers or the assignment has no such notebook."""
        solution = self.options.solutions / assignment / name
        if self.options.allow_library_answers or not solution.is_file():
            return {}
        return submission.library_answers(handed_in, notebooks.read(solution))

    def _without_library_answers(self, row: Row, borrowed: dict[str, dict]) -> Row:
        """`row` without the points of the exercises answered with the library's code."""
        from dataclasses import replace

        lost, notes = 0.0, []
        for name, flagged in borrowed.items():
            if not flagged:
                continue
            solution = notebooks.read(self.options.solutions / row.assignment / name)
            tests = notebooks.exercises(solution)
            scores = self.book.cell_scores(
                row.assignment, row.student_id, name.removesuffix(".ipynb")
            )
            for exercise, objects in sorted(flagged.items()):
                lost += sum(scores.get(test, 0.0) for test in tests.get(exercise, []))
                notes.append(f"{exercise} uses {', '.join(objects)}")
        if not notes:
            return row
        note = "no points for the library's answers: " + "; ".join(notes)
        return replace(row, score=max(0.0, row.score - lost), status="library-answer", notes=note)


RETRIES = 1  # a submission whose grading failed for the machine's reason runs once more


def infrastructure_failure(result) -> bool:
    """Did grading fail for a reason of the machine's (the gradebook was locked, the nbgrader
    process died) rather than the submission's?"""
    text = result.output
    return result.returncode != 0 and (
        "database is locked" in text or "[the nbgrader process died]" in text
    )


SOLUTION_ID = "_solution-check"  # the student id the solutions are graded under first


def solution_problem(row: Row, out: Path) -> str | None:
    """Why a solution graded in the sandbox shows the machine cannot grade (less than full
    marks, or any cell that failed); None when it earned everything cleanly."""
    if row.status != "ok" or row.score < row.max_score:
        why = f"status {row.status}" + (f": {row.notes}" if row.notes else "")
        return f"it scores {row.score:g}/{row.max_score:g} ({why})"
    for nb in sorted((out / "autograded" / row.student_id / row.assignment).glob("*.ipynb")):
        for index, cell, output in submission.errors(notebooks.read(nb)):
            where = submission.graded_id(cell) or f"cell {index + 1}"
            return f"{where} failed: {output.get('ename')} {output.get('evalue', '')}"
    return None


def start_workers(options: GradeOptions, count: int) -> list[Worker]:
    """`count` workers for `run_workers`, made now so that their fork servers import while
    the caller prepares the run (nbgrader generating the assignments, say). `run_workers`
    closes those it is given; `close_workers` those never given to it."""
    workers: list[Worker] = []
    try:
        for index in range(count):
            workers.append(Worker(index, options))
    except BaseException:
        close_workers(workers)
        raise
    return workers


def close_workers(workers: list[Worker]) -> None:
    """Close every worker in `workers` and empty the list."""
    while workers:
        workers.pop().close()


def run_workers(
    to_run: queue.Queue[Submission],
    options: GradeOptions,
    record: Callable[[Row], None],
    log: Callable[[str], None],
    solutions: tuple[str, ...] = (),
    started: list[Worker] | None = None,
) -> None:
    """Grade every submission in `to_run` with up to ``options.workers`` workers, each row
    handed to `record` as it is decided. The solutions of `solutions` (assignments) are
    graded first, under SOLUTION_ID, in the same sandbox: unless each earns full marks with
    no failing cell, no student's row is recorded (students graded meanwhile are
    forgotten) and RuntimeError says why (a machine without the course data, say, must not
    look like a class of wrong answers). `started`: workers from `start_workers` to use
    (and close). The first error in a worker stops them all and is raised here; on Ctrl-C
    every running kernel is killed and no half-graded row recorded."""
    errors: list[BaseException] = []
    live: list[Worker] = []
    work_queue: queue.Queue[Submission] = queue.Queue()
    for assignment in solutions:
        work_queue.put((SOLUTION_ID, assignment, options.solutions / assignment))
    while not to_run.empty():
        work_queue.put(to_run.get_nowait())
    to_run = work_queue
    checked = threading.Event()
    unchecked = [len(solutions)]
    guard = threading.Lock()
    if not solutions:
        checked.set()

    def check(row: Row) -> None:
        problem = solution_problem(row, options.out)
        shutil.rmtree(options.out / "autograded" / SOLUTION_ID, ignore_errors=True)
        if problem:
            log_file = options.out / "logs" / f"{SOLUTION_ID}__{row.assignment}.log"
            raise RuntimeError(
                f"not grading: the solution of {row.assignment}, graded in the sandbox as a "
                f"student would be, shows this machine cannot grade it: {problem}. See "
                f"{log_file}; a missing course data file (COURSE_DATA_DIR) or library is "
                "the usual cause"
            )
        log(f"{row.assignment}: the solution earns full marks in the sandbox")
        with guard:
            unchecked[0] -= 1
            if unchecked[0] == 0:
                checked.set()

    def discard(row: Row) -> None:
        """Forget a row never recorded: the next run grades the submission again."""
        shutil.rmtree(options.out / "autograded" / row.student_id / row.assignment,
                      ignore_errors=True)  # fmt: skip

    def work(index: int) -> None:
        worker = None
        try:
            worker = prepared[index] if index < len(prepared) else Worker(index, options)
            live.append(worker)
            why_not = worker.ready()
            if why_not:
                log(f"worker {index}: {why_not}; kernels import on their own")
            while not errors:
                try:
                    student, assignment, folder = to_run.get_nowait()
                except queue.Empty:
                    return
                if student == SOLUTION_ID:
                    check(worker.grade(student, assignment, folder))
                    continue
                # Students are graded while the solutions are checked (the cores would
                # idle), but no row is recorded before every solution has passed.
                log(f"{student}/{assignment}: autograding")
                row = worker.grade(student, assignment, folder)
                while not checked.wait(0.2) and not errors:
                    pass
                if errors:  # stopped (or a solution failed) while it ran: not a grade
                    discard(row)
                    return
                record(row)
        except BaseException as err:  # stop the others; re-raised in the main thread
            errors.append(err)
        finally:
            if worker is not None:
                worker.close()

    count = min(options.workers, to_run.qsize())
    # Workers from `start_workers` are this function's to close from here on: each
    # thread closes its own; those beyond `count` are not needed.
    prepared = list(started or [])
    if started is not None:
        started.clear()
    close_workers(prepared[count:])
    del prepared[count:]
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
            worker.stop()
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

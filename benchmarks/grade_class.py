"""How fast does a class get graded? Target: >= 40 submissions per minute
(`TARGET_PER_MINUTE`) for chapter 00's 40-notebook class on a 2-core machine, every kernel
fully sandboxed; and the peak memory of the run.

    .venv/bin/python benchmarks/grade_class.py
    .venv/bin/python benchmarks/grade_class.py --workers 1 --size 10 --keep /tmp/graded
    .venv/bin/python benchmarks/grade_class.py --no-preload   # kernels import on their own

The class is the one the tests grade (tests/grading_class.py): correct, stub and partly
right notebooks, and broken or hostile ones (endless loop, memory and fork bombs, a dying
kernel, huge output, invalid JSON, tampered cells, cells that snoop, vandalize or dial out).
It is built in a temporary folder and graded there with `autograde.grade.grade`. Peak memory
is the largest sum, sampled every 0.2 s, of the resident memory (RSS) of this process and
every process under it (nbgrader, fork servers, kernels, whatever a kernel forks). RSS
counts shared pages once per process, so forked children (the fork bomb's) inflate it; the
proportional sum (PSS, shared pages split between their users), sampled every second (it is
costly to read), is printed beside it and is closer to what the machine needed. CPU seconds
are those of the same processes: the figure to compare when another job on the machine
makes the wall time noisy. Wall time covers grading only (the workers' start, fork
servers included) and the feedback pages; building the class is not timed. Seconds per
submission are from each "autograding" log line to the submission's row, as the grader
reports them.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from grading_class import FULL_CLASS, ConnectionCounter, make_class  # noqa: E402

from autograde.grade import grade  # noqa: E402

# The bar for chapter 00's class on a 2-core machine, every kernel fully sandboxed.
TARGET_PER_MINUTE = 40.0


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


class PeakMemory:
    """Samples this process tree in a thread: ``peak_mb`` (RSS sum, every `every` s),
    ``peak_pss_mb`` (PSS sum, every `pss_every` s) and ``cpu_s``, the CPU seconds its
    processes used as last seen (`sampler_cpu_s` of it the sampling's own).

    PSS is sampled less often: reading it makes the kernel walk every page table of a
    process, and the fork servers and kernels map gigabytes; at 0.2 s it cost about a third
    of a core, a load on the grading it measures."""

    def __init__(self, every: float = 0.2, pss_every: float = 1.0):
        self.every = every
        self.pss_every = pss_every
        self.peak_mb = 0.0
        self.peak_pss_mb = 0.0
        self.sampler_cpu_s = 0.0
        # (pid, start time) -> user + system seconds: a process's own CPU, not its
        # children's (they are counted themselves), seen until it ends
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)

    def _tree_mb(self, pss: bool) -> tuple[float, float]:
        me = psutil.Process()
        rss_sum = pss_sum = 0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                if pss:
                    full = proc.memory_full_info()
                    rss_sum, pss_sum = rss_sum + full.rss, pss_sum + full.pss
                else:
                    rss_sum += proc.memory_info().rss
                times = proc.cpu_times()
                self._cpu[(proc.pid, proc.create_time())] = times.user + times.system
        return rss_sum / 2**20, pss_sum / 2**20

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())

    def _sample(self) -> None:
        next_pss = 0.0
        while not self._stop.is_set():
            pss = time.monotonic() >= next_pss
            if pss:
                next_pss = time.monotonic() + self.pss_every
            rss_mb, pss_mb = self._tree_mb(pss)
            self.peak_mb = max(self.peak_mb, rss_mb)
            self.peak_pss_mb = max(self.peak_pss_mb, pss_mb)
            self.sampler_cpu_s = time.thread_time()
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Timeline:
    """The grader's log lines with their times: seconds per autograded submission."""

    def __init__(self):
        self.started: dict[str, float] = {}
        self.took: list[float] = []
        self.last_row = 0.0

    def __call__(self, msg: str) -> None:
        now = time.perf_counter()
        key, _, rest = msg.partition(": ")
        if rest == "autograding":
            self.started[key] = now
        elif key in self.started:
            self.took.append(now - self.started.pop(key))
            self.last_row = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="00_setup")
    parser.add_argument("--size", type=int, default=FULL_CLASS, help="students in the class")
    parser.add_argument(
        "--workers", type=int, default=None, help="submissions graded at once (grader's default)"
    )
    parser.add_argument("--cell-timeout", type=int, default=10, help="seconds per cell")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per notebook")
    parser.add_argument("--keep", type=Path, default=None, help="grade into DIR and keep it")
    parser.add_argument(
        "--no-preload", action="store_true", help="no fork servers: kernels import everything"
    )
    args = parser.parse_args()

    if args.keep:
        root = args.keep.resolve()
        if root.exists() and any(root.iterdir()):
            parser.error(f"--keep {root}: not empty (a second run would grade nothing)")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="grade-class-"))
    subs, out = root / "submissions", root / "out"
    try:
        with ConnectionCounter() as counter:
            expected = make_class(
                subs,
                assignment=args.assignment,
                solutions=REPO / "solutions",
                release=REPO / "notebooks",
                gradebook=out / "gradebook.db",
                port=counter.port,
                size=args.size,
            )
            print(
                f"{args.assignment}: {len(expected)} submissions, "
                f"{args.workers or 'default number of'} worker(s), "
                f"{psutil.cpu_count()} cores, cell timeout {args.cell_timeout} s, "
                f"{'no preloading' if args.no_preload else 'kernels forked preloaded'}",
                flush=True,
            )
            timeline = Timeline()
            with PeakMemory() as memory:
                start = time.perf_counter()
                rows = grade(
                    subs,
                    out,
                    workers=args.workers,
                    cell_timeout=args.cell_timeout,
                    timeout=args.timeout,
                    solutions=REPO / "solutions",
                    preload=not args.no_preload,
                    log=timeline,
                )
                end = time.perf_counter()
                seconds = end - start
            connections = counter.count
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    per_minute = len(rows) / seconds * 60
    as_expected = sum(
        expected.get(r.student_id) == (float(r.score), r.status)
        for r in rows
        if r.assignment == args.assignment
    )
    print(f"{'submissions':<22} {len(rows):>8}")
    print(f"{'wall s':<22} {seconds:8.1f}")
    print(
        f"{'per minute':<22} {per_minute:8.1f}   "
        f"(target >= {TARGET_PER_MINUTE:.0f}/min: {met(per_minute >= TARGET_PER_MINUTE)})"
    )
    print(f"{'peak MB':<22} {memory.peak_mb:8.0f}   (RSS of grader + nbgrader + kernels)")
    print(
        f"{'peak MB, PSS':<22} {memory.peak_pss_mb:8.0f}   (shared pages split; "
        f"sampled every {memory.pss_every:g} s)"
    )
    cores = psutil.cpu_count()
    print(
        f"{'CPU s':<22} {memory.cpu_s:8.1f}   (grading's processes as last sampled, "
        f"{memory.sampler_cpu_s:.1f} s of it the sampling; {cores} cores x wall s = "
        f"{seconds * cores:.0f})"
    )
    if timeline.took:
        took = sorted(timeline.took)
        print(
            f"{'s per submission':<22} {sum(took) / len(took):8.1f}   "
            f"(median {took[len(took) // 2]:.1f}, max {took[-1]:.1f}; "
            f"{len(took)} ran in a kernel)"
        )
        print(f"{'s after the last row':<22} {end - timeline.last_row:8.1f}   (feedback pages)")
    for status, count in sorted(Counter(r.status for r in rows).items()):
        print(f"{'  ' + status:<22} {count:>8}")
    print(f"{'rows as expected':<22} {as_expected:>8} of {len(expected)}")
    print(f"{'network connections':<22} {connections:>8}   (should be 0)")
    if args.keep:
        print(f"kept: {root}")


if __name__ == "__main__":
    main()

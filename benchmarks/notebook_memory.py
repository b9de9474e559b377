"""Peak memory and wall time of each chapter notebook, as a learner would run it.

Binder gives a notebook 2 GB, and that limit counts every process of the kernel: the
DataLoader workers, the distributed ranks and TensorFlow workers, the test cells' child
processes. This executes each solution notebook (full size by default, ``--smoke`` for the
small size the test suite runs) in a fresh kernel started by nbclient, and samples the
kernel's whole process tree every --every seconds:

- peak PSS of the tree (proportional set size: a page shared by several processes, such as
  PyTorch's libraries in two ranks, is divided among them, so the sum is what the machine
  really holds) -- the figure held against the 2 GB limit;
- peak of the summed RSS (each process's resident memory, shared pages counted again: an
  upper bound) and the kernel's own peak RSS;
- the most processes alive at once;
- wall time of the whole notebook, and the CPU time of the kernel and every process it
  started and waited for (getrusage of this script's children, taken around the run).

A sampler sees the peak only to within one interval: a process that lives for less than
--every seconds may be missed. The machine's load average is printed for each chapter: on a
shared machine every figure is an upper bound.

    python benchmarks/notebook_memory.py                    # every chapter, full size
    python benchmarks/notebook_memory.py 10_export          # one chapter
    python benchmarks/notebook_memory.py --smoke --json smoke.json
    python benchmarks/notebook_memory.py 11_verdict --keep runs/  # + the folder as run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from run_record import RunRecord  # beside this script

REPO = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048
SMOKE_BUDGET_S = 20 * 60  # the whole course in smoke mode on 2 cores
MB = 1e6


class TreeSampler(threading.Thread):
    """Samples the memory of every descendant of this process until stopped."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.peak_pss = self.peak_rss_sum = self.kernel_peak_rss = 0
        self.most_processes = 0
        self.samples = 0
        self._done = threading.Event()

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        pss = rss = 0
        procs = me.children(recursive=True)
        for proc in procs:
            try:
                info = proc.memory_full_info()  # reads /proc/PID/smaps_rollup
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            pss += getattr(info, "pss", info.rss)
            rss += info.rss
            if proc.ppid() == me.pid:  # the kernel itself (nbclient starts only the kernel)
                self.kernel_peak_rss = max(self.kernel_peak_rss, info.rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss_sum = max(self.peak_rss_sum, rss)
        self.most_processes = max(self.most_processes, len(procs))
        self.samples += 1

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, smoke: bool, every: float, timeout: int, keep: Path | None = None) -> dict:
    """One solution notebook executed top to bottom in a fresh kernel, in a scratch copy of
    its folder (the files it writes stay out of the repository; with `keep`, the folder
    as the run left it is copied to keep/<chapter>, the executed notebook included)."""
    import shutil

    import nbformat
    from nbclient import NotebookClient

    from autograde import channels

    source = REPO / "solutions" / name
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"notebook-memory-{name}-") as tmp:
        folder = Path(tmp) / name
        shutil.copytree(source, folder)
        nb = nbformat.read(str(folder / f"{name}.ipynb"), as_version=4)
        os.environ["COURSE_SMOKE"] = "1" if smoke else ""
        os.environ.setdefault("MPLBACKEND", "Agg")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sampler = TreeSampler(every)
        cpu_before, start = children_cpu(), time.perf_counter()
        sampler.start()
        error = None
        try:
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": str(folder)}},
                                    config=channels.config())  # fmt: skip
            client.execute()
        except Exception as err:  # a failing cell: reported in the row, the others still run
            error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}"
        finally:
            sampler.stop()
        seconds = time.perf_counter() - start
        if keep is not None:
            nbformat.write(nb, str(folder / f"{name}.ipynb"))  # with its outputs
            shutil.copytree(folder, keep / name, dirs_exist_ok=True)
    return {
        "chapter": name,
        "size": "smoke" if smoke else "full",
        "seconds": seconds,
        "cpu_seconds": children_cpu() - cpu_before,
        "peak_pss_mb": sampler.peak_pss / MB,
        "peak_rss_sum_mb": sampler.peak_rss_sum / MB,
        "kernel_peak_rss_mb": sampler.kernel_peak_rss / MB,
        "most_processes": sampler.most_processes,
        "samples": sampler.samples,
        "load_average": [load_before, os.getloadavg()[0]],
        "error": error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", help="default: every chapter in solutions/")
    parser.add_argument("--smoke", action="store_true", help="run at the small size")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell at most")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--keep", default=None, type=Path, metavar="DIR",
                        help="copy each chapter's folder, as run, to DIR/CHAPTER")  # fmt: skip
    args = parser.parse_args(argv)
    everything = sorted(p.name for p in (REPO / "solutions").iterdir() if any(p.glob("*.ipynb")))
    unknown = sorted(set(args.chapters) - set(everything))
    if unknown:
        parser.error(f"no chapter {', '.join(unknown)}; chapters: {', '.join(everything)}")
    names = args.chapters or everything
    run = RunRecord()
    size = "smoke" if args.smoke else "full"
    print(f"{'chapter':<20} {'PSS MB':>7} {'RSS sum':>8} {'kernel':>7} {'procs':>5} "
          f"{'seconds':>8} {'CPU s':>7}  load  ({size} size; memory: peaks of the kernel's "
          "process tree)", flush=True)  # fmt: skip
    rows, problems = [], []
    for name in names:
        row = measure(name, args.smoke, args.every, args.timeout, args.keep)
        rows.append(row)
        flags = []
        if row["peak_pss_mb"] > BINDER_LIMIT_MB:
            flags.append(f"over Binder's {BINDER_LIMIT_MB} MB")
        if row["error"]:
            flags.append(f"FAILED: {row['error']}")
        problems += [f"{name}: {flag}" for flag in flags]
        load = "->".join(f"{x:.1f}" for x in row["load_average"])
        print(f"{name:<20} {row['peak_pss_mb']:7.0f} {row['peak_rss_sum_mb']:8.0f} "
              f"{row['kernel_peak_rss_mb']:7.0f} {row['most_processes']:5d} "
              f"{row['seconds']:8.1f} {row['cpu_seconds']:7.1f}  {load}"
              + "".join(f"  {f}" for f in flags), flush=True)  # fmt: skip
    total = sum(r["seconds"] for r in rows)
    print(f"{'all':<20} {max(r['peak_pss_mb'] for r in rows):7.0f} {'':>8} {'':>7} {'':>5} "
          f"{total:8.1f}")  # fmt: skip
    if args.smoke and len(names) == len(everything):
        verdict = "met" if total <= SMOKE_BUDGET_S else "NOT met"
        print(f"\nwhole course in smoke mode: {total / 60:.1f} min, budget "
              f"{SMOKE_BUDGET_S // 60} min: {verdict}")  # fmt: skip
        if total > SMOKE_BUDGET_S:
            problems.append("the whole course in smoke mode is over its budget")
    finished = run.finish()
    if args.json:
        record = {"rows": rows, "size": size, "binder_limit_mb": BINDER_LIMIT_MB, **finished}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

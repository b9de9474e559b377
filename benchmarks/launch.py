"""How long `course.torch.launch.launch` takes to start 2 ranks, run one all-reduce and end.

    .venv/bin/python benchmarks/launch.py [--launches 5]

Two ways of starting the ranks, each in a fresh Python of its own (a fork server lives as
long as the process that started it): "forkserver", what `launch` uses, the ranks forked
from a server that imported torch and FSDP2 once; "spawn", a fresh Python per rank that
imports them itself. The first launch of a process starts the fork server, so it is shown
apart; the figure is the median of the --launches after it. Chapter 09's graded tests
launch ranks a few dozen times, and its probe (every wrong answer) several hundred.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_CHILD = """
import json, sys, time
from course.torch import _distributed_workers as workers, launch as L
if sys.argv[1] == "spawn":
    L._start_method = lambda: "spawn"
if __name__ == "__main__":
    times = []
    for _ in range(int(sys.argv[2]) + 1):
        start = time.perf_counter()
        L.launch(workers.echo, 2, "ping", max_seconds=120)
        times.append(time.perf_counter() - start)
    print(json.dumps(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=5, help="timed launches after the first")
    args = parser.parse_args()
    print(f"{'start method':14s} {'first launch s':>15s} {'median after s':>15s}")
    medians = {}
    for method in ("forkserver", "spawn"):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, method, str(args.launches)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        times = json.loads(out.strip().splitlines()[-1])
        medians[method] = statistics.median(times[1:])
        print(f"{method:14s} {times[0]:15.2f} {medians[method]:15.2f}")
    print(f"a launch after the first: {medians['spawn'] / medians['forkserver']:.1f}x faster")


if __name__ == "__main__":
    main()

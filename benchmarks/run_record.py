"""What a benchmark prints last, and keeps in its --json record: how loaded the machine was
(its figures are upper bounds on a shared machine), the command that reproduces them, and
the wall time.

    from run_record import RunRecord     # beside the benchmark scripts
    run = RunRecord()                    # at the start: the clock and the load average
    ...
    record = run.finish()                # prints the lines; {"command", "seconds", "load_average"}
"""

from __future__ import annotations

import os
import shlex
import sys
import time


class RunRecord:
    def __init__(self) -> None:
        self.started, self.load_before = time.perf_counter(), os.getloadavg()

    def finish(self) -> dict:
        """Print the load average before and after, the command and the wall time; return
        them for the benchmark's JSON record."""
        load_after = os.getloadavg()
        command = shlex.join(["python", *sys.argv])
        seconds = time.perf_counter() - self.started
        before, after = (
            " ".join(f"{x:.2f}" for x in load) for load in (self.load_before, load_after)
        )
        print(f"\nload average    before {before}, after {after} (1, 5, 15 min; 2 cores)")
        print(f"command         {command}\nwall time       {seconds:.0f} s")
        return {
            "command": command,
            "seconds": seconds,
            "load_average": {"before": self.load_before, "after": load_after},
        }

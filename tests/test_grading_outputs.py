"""autograde/outputs.py: a cell that floods its output is cut short on the grader's side.

The kernel is untrusted, so the cap sits in the nbgrader process: past the limit, what a
cell sends is dropped as it arrives, the kernel is interrupted, and the cell ends in an
``OutputLimitExceeded`` error that gives its row the "output-limit" status.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import psutil
from conftest import TOY, edit_cell

from autograde import notebooks
from autograde.grade import grade
from autograde.outputs import ENAME

ANSWER = "\ndef add(a, b):\n    return a + b\n"
# Each floods the `add` answer cell, bounded (a missing cap fails the test; it does not
# fill the disk): student -> the cell's source.
FLOODS = {
    "pete": "for _ in range(200):\n    print('x' * 2**20)\n",  # 200 MB, in 1 MB prints
    "lena": "for i in range(3_000_000):\n    print(i)\n",  # ~20 MB, in short lines
    "hugo": "from IPython.display import HTML, display\ndisplay(HTML('x' * 2**25))\n",  # 32 MB
    "fred": "import os\nfor _ in range(100):\n    os.write(1, b'y' * 2**20)\n",  # fd level
    # One message of 256 MB: refused by the grader's sockets unread, never held in memory.
    "maxi": "from IPython.display import HTML, display\ndisplay(HTML('z' * 2**28))\n",
}


class PeakMemory:
    """The largest peak resident size (VmHWM) of this process's nbgrader children, read
    every 0.2 s while the block runs."""

    def __init__(self):
        self.peak_mb = 0.0
        self._done = threading.Event()

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._done.wait(0.2):
            for child in me.children(recursive=True):
                try:
                    if "autograde.runner" in " ".join(child.cmdline()):
                        self.peak_mb = max(self.peak_mb, _vm_hwm_mb(child.pid))
                except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                    pass

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_flooding_cell_is_cut_and_named_and_an_honest_one_still_scores(
    toy_course, tmp_path, monkeypatch
):
    solutions, release_dir = toy_course
    release_nb = release_dir / TOY / f"{TOY}.ipynb"
    subs = tmp_path / "submissions"
    for student, flood in FLOODS.items():
        dest = subs / student / TOY / f"{TOY}.ipynb"
        edit_cell(release_nb, "add", flood + ANSWER, dest)
    honest = subs / "alice" / TOY / f"{TOY}.ipynb"
    honest.parent.mkdir(parents=True)
    honest.write_bytes((solutions / TOY / f"{TOY}.ipynb").read_bytes())
    graded: dict[str, tuple[int, object]] = {}  # student -> (bytes on disk, notebook)
    real_read = notebooks.read

    def spy(path):
        nb = real_read(path)
        if Path(path).parent.parent.parent.name == "autograded":
            graded[Path(path).parent.parent.name] = (Path(path).stat().st_size, nb)
        return nb

    monkeypatch.setattr(notebooks, "read", spy)
    out, started, took = tmp_path / "out", {}, {}

    def log(msg: str) -> None:
        who = msg.split("/", 1)[0]
        if msg.endswith(": autograding"):
            started[who] = time.monotonic()
        elif who in started:
            took[who] = time.monotonic() - started[who]

    with PeakMemory() as memory:
        grade(subs, out, workers=2, cell_timeout=60, timeout=600, solutions=solutions, log=log)
    print(f"seconds per submission: {took}; nbgrader peak RSS {memory.peak_mb:.0f} MB")
    # nbgrader itself takes ~150 MB; a 256 MB message held whole would take twice that more.
    assert memory.peak_mb < 400, f"nbgrader peaked at {memory.peak_mb:.0f} MB"
    with (out / "grades.csv").open() as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert (rows["alice"]["score"], rows["alice"]["status"]) == ("3.0", "ok"), rows["alice"]
    for student in FLOODS:
        row = rows[student]
        assert (row["status"], row["score"]) == ("output-limit", "0.0"), row
        assert "add" in row["notes"] and ENAME in row["notes"], row
        size, nb = graded[student]
        assert size < 3 * 2**20, f"{student}: autograded notebook of {size / 2**20:.0f} MB"
        add = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "add")
        assert add.outputs[-1].output_type == "error" and add.outputs[-1].ename == ENAME
        assert len(json.dumps(add.outputs)) < 2 * 2**20
    # What a kernel writes at fd level goes to its log, not over IOPub: bounded there by the
    # sandbox's file-size limit (64 MB), not by this cap.
    for log_file in (out / "logs").iterdir():
        bound = 65 * 2**20 if log_file.name.startswith("fred_") else 2**20
        assert log_file.stat().st_size < bound, log_file

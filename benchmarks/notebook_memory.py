"""Peak memory and wall time of each chapter notebook, as a learner would run it.

Binder gives a notebook 2 GB: every chapter must stay below that. This executes each
solution notebook (full size by default, ``--smoke`` for the small size) in a fresh kernel
and prints the kernel's peak resident memory, read from the kernel itself at the end.

    python benchmarks/notebook_memory.py            # all chapters, full size
    python benchmarks/notebook_memory.py 00_setup --smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048

PEAK_CELL = (
    "import resource, sys\n"
    "_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print(_kb / 1024 if sys.platform != 'darwin' else _kb / 2**20)\n"
)


def measure(name: str, smoke: bool) -> tuple[float, float]:
    """(peak MB, seconds) for one solution notebook executed top to bottom."""
    import nbformat
    from nbclient import NotebookClient

    path = REPO / "solutions" / name / f"{name}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    os.environ["COURSE_SMOKE"] = "1" if smoke else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    NotebookClient(nb, timeout=3600, resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    peak_mb = float(nb.cells[-1].outputs[0]["text"].strip())
    return peak_mb, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", help="default: every chapter in solutions/")
    parser.add_argument("--smoke", action="store_true", help="run at the small size")
    args = parser.parse_args(argv)
    names = args.chapters or sorted(
        p.name for p in (REPO / "solutions").iterdir() if any(p.glob("*.ipynb"))
    )
    over = []
    print(f"{'chapter':<16} {'peak MB':>8} {'seconds':>8}  ({'smoke' if args.smoke else 'full'})")
    for name in names:
        peak_mb, seconds = measure(name, args.smoke)
        flag = "  over Binder's 2 GB!" if peak_mb > BINDER_LIMIT_MB else ""
        print(f"{name:<16} {peak_mb:8.0f} {seconds:8.1f}{flag}", flush=True)
        if flag:
            over.append(name)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())

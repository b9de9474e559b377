"""PyTorch and TensorFlow/Keras side by side on the course's GPT (chapter 11).

The measurements live in the library, `course.compare`, so that chapter 11 runs the same
code; this script is its command line among the other benchmarks:

    python benchmarks/compare.py --out compare-run                 # full size, ~10 min
    python benchmarks/compare.py --out compare-smoke --size smoke  # what CI runs
    python benchmarks/compare.py --out compare-run --only train,export

It writes OUT/compare.json (resumed if run again) and OUT/compare.png, prints the decision
matrix and which of the claims in `course.compare.CLAIMS` held, and exits 1 if a section
failed. Needs the corpus for the train section (COURSE_DATA_DIR or a download).
"""

from __future__ import annotations

import sys

from course.compare import main

if __name__ == "__main__":
    sys.exit(main())

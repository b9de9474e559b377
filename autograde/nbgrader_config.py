"""nbgrader configuration for the Twin GPT course.

`python -m autograde` uses this file for you. To call nbgrader yourself, run it from the
repository root (its nbgrader_config.py loads this one):

    nbgrader generate_assignment 00_setup

solutions/ is nbgrader's *source* folder (instructor notebooks with solutions and hidden
tests); notebooks/ is its *release* folder (what learners open). The gradebook is SQLite.
"""

from pathlib import Path

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

REPO = Path(__file__).resolve().parent.parent

c.CourseDirectory.course_id = "twin-gpt"
c.CourseDirectory.root = str(REPO)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
# The py:percent twin of each solution notebook (NN_topic/NN_topic.py) holds the solutions
# in plain text: it must never be copied into a release. Other .py files are released.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "[0-9][0-9]_*.py",
]

# What a learner sees where a solution was removed.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grading runs student code: bound each cell, and after a timeout interrupt the kernel and
# go on, so an endless loop costs one timeout rather than one per remaining cell.
c.Execute.timeout = 300
c.Execute.interrupt_on_timeout = True
# Kernel clients that look at their sockets every second: a reply whose wake-up was missed
# is read then, not when the cell's timeout runs out (autograde/channels.py).
c.AsyncKernelManager.client_factory = "autograde.channels.WakefulKernelClient"

# A cell's output is capped as it arrives (autograde/outputs.py): past 1 MB for the cell, or
# 8 MB for the notebook, the rest is dropped, the kernel interrupted, and the cell ends in an
# OutputLimitExceeded error (the row's status: output-limit).
from autograde.outputs import autograde_preprocessors  # noqa: E402

c.Autograde.autograde_preprocessors = autograde_preprocessors()
c.CappedExecute.max_cell_output = 2**20
c.CappedExecute.max_notebook_output = 8 * 2**20

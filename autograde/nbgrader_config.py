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

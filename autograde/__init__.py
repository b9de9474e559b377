"""Release, check and grade the course with nbgrader: see `python -m autograde --help`."""

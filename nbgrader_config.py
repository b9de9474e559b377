"""nbgrader looks for its configuration in the folder it runs from: this points it at
autograde/nbgrader_config.py, so `nbgrader ...` and the formgrader in `make lab` work
from the repository root."""

c = get_config()  # noqa: F821 - provided by nbgrader
load_subconfig("autograde/nbgrader_config.py")  # noqa: F821

"""``python -m autograde.nbgrader_app ARGS``: nbgrader's command line (``nbgrader ARGS``),
without the start-up costs `autograde.startup` takes off."""

from __future__ import annotations

from .startup import prepare_nbgrader


def main() -> None:
    prepare_nbgrader()
    from nbgrader.apps.nbgraderapp import main as nbgrader_main

    nbgrader_main()


if __name__ == "__main__":
    main()

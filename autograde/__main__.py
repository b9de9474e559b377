"""``python -m autograde``: release, check and grade the course with nbgrader.

python -m autograde release [ASSIGNMENT ...]   regenerate notebooks/ from solutions/
python -m autograde check [ASSIGNMENT ...]     fail if notebooks/ is stale, a solution
                                               fails its tests, or a stub passes one
python -m autograde grade SUBMISSIONS --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograde", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_release = sub.add_parser("release", help="regenerate notebooks/ from solutions/")
    p_release.add_argument("assignments", nargs="*", help="default: all")

    p_check = sub.add_parser("check", help="verify releases, solutions and stubs")
    p_check.add_argument("assignments", nargs="*", help="default: all")
    p_check.add_argument(
        "--no-execute", action="store_true", help="only compare files; run no notebook"
    )

    p_grade = sub.add_parser("grade", help="autograde SUBMISSIONS/<student>/<assignment>/")
    p_grade.add_argument("submissions", type=Path)
    p_grade.add_argument("--out", type=Path, required=True, help="where grades.csv goes")
    p_grade.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per submission (default 900)"
    )
    p_grade.add_argument(
        "--cell-timeout", type=int, default=120, help="seconds per cell (default 120)"
    )

    args = parser.parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    if args.command in ("release", "check"):
        from .workspace import assignments

        unknown = sorted(set(args.assignments) - set(assignments()))
        if unknown:
            print(
                f"error: no assignment {', '.join(unknown)} in solutions/ "
                f"(known: {', '.join(assignments())})",
                file=sys.stderr,
            )
            return 2
    if args.command == "release":
        from .release import release

        release(args.assignments or None, log=log)
        return 0
    if args.command == "check":
        from .release import check

        report = check(args.assignments or None, execute=not args.no_execute, log=log)
        for problem in report.problems:
            print(f"FAIL {problem}", file=sys.stderr)
        print("check passed" if report.ok else f"check failed: {len(report.problems)} problem(s)")
        return 0 if report.ok else 1
    if args.command == "grade":
        from .grade import grade

        try:
            rows = grade(
                args.submissions,
                args.out,
                timeout=args.timeout,
                cell_timeout=args.cell_timeout,
                log=log,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"graded {len(rows)} submission(s) into {args.out / 'grades.csv'}")
        return 0
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

"""``python -m autograde``: release, check and grade the course with nbgrader.

python -m autograde release [ASSIGNMENT ...]   regenerate notebooks/ from solutions/
python -m autograde check [ASSIGNMENT ...]     fail if notebooks/ is stale, a solution
                                               fails its tests, or a stub passes one
python -m autograde grade SUBMISSIONS --out DIR  autograde a class, each submission in a
                                               sandbox: grades.csv, gradebook, feedback
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from course.runtime import command_name


def _defaults(function) -> dict[str, object]:
    """The keyword defaults of `function` (or of a dataclass's fields): one place for them."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def main(argv: list[str] | None = None) -> int:
    from .startup import defer_iri_grammar

    defer_iri_grammar()  # this process reads notebooks: ~2.5 s of CPU less at start
    from .grade import grade
    from .gradebook import DB_VARIABLE, gradebook_url
    from .sandbox import Limits

    grade_defaults, limit_defaults = _defaults(grade), _defaults(Limits)
    parser = argparse.ArgumentParser(
        prog=command_name("autograde"), description=__doc__.split("\n")[0]
    )
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
        "--timeout",
        type=float,
        default=grade_defaults["timeout"],
        help=f"seconds per submission (default {grade_defaults['timeout']:g})",
    )
    p_grade.add_argument(
        "--cell-timeout",
        type=int,
        default=grade_defaults["cell_timeout"],
        help=f"seconds per cell (default {grade_defaults['cell_timeout']})",
    )
    p_grade.add_argument(
        "--db", default=None, help="gradebook URL without a password, e.g. "
        "postgresql://grader@host/name; the password comes from ~/.pgpass or PGPASSFILE "
        f"(libpq), or give the whole URL in ${DB_VARIABLE} (default: SQLite in "
        "OUT/gradebook.db)",
    )  # fmt: skip
    options = [
        ("--workers", int, "submissions graded at once (default: cores + 1, up to 4)"),
        ("--roster", Path, "CSV of students (id[,first_name,last_name,email])"),
        ("--due", str, 'due date of the graded assignments, "YYYY-MM-DD HH:MM" (UTC)'),
        (
            "--memory-mb",
            int,
            "address-space limit of each student kernel (MB, default "
            f"{limit_defaults['memory_mb']})",
        ),
        (
            "--max-processes",
            int,
            f"processes + threads of each student sandbox (default {limit_defaults['processes']})",
        ),
    ]
    for flag, kind, text in options:
        p_grade.add_argument(flag, type=kind, default=None, help=text)
    p_grade.add_argument(
        "--show-hidden-tests", action="store_true", help="feedback shows hidden test source"
    )
    p_grade.add_argument(
        "--allow-library-answers", action="store_true", help="self-paced use: an answer "
        "that uses the course library's code for its exercise scores too",
    )  # fmt: skip
    p_grade.add_argument(
        "--unsafe-no-sandbox", action="store_true", help="grade even where this machine "
        "gives student kernels no sandbox (they then run with your rights); every row and "
        "feedback page says so",
    )  # fmt: skip
    p_grade.add_argument(
        "--no-preload", action="store_true", help="kernels import numpy, PyTorch and "
        "TensorFlow each on their own (slower; saves ~700 MB per worker)",
    )  # fmt: skip

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
        from collections import Counter
        from dataclasses import replace

        try:
            limits = Limits()
            if args.memory_mb is not None:
                limits = replace(limits, memory_mb=args.memory_mb)
            if args.max_processes is not None:
                limits = replace(limits, processes=args.max_processes)
            rows = grade(
                args.submissions,
                args.out,
                db=gradebook_url(args.db),
                workers=args.workers,
                timeout=args.timeout,
                cell_timeout=args.cell_timeout,
                limits=limits,
                hide_hidden_tests=not args.show_hidden_tests,
                roster=args.roster,
                due=args.due,
                preload=not args.no_preload,
                unsafe_no_sandbox=args.unsafe_no_sandbox,
                allow_library_answers=args.allow_library_answers,
                log=log,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                f"interrupted: the rows already in {args.out / 'grades.csv'} are kept; "
                "run the same command again to grade the rest",
                file=sys.stderr,
            )
            return 130
        counts = Counter(row.status for row in rows)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"{len(rows)} row(s) in {args.out / 'grades.csv'}: {summary or 'none'}")
        return 0
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

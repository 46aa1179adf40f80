"""The ``kfr-mmlu`` command: list MMLU's subjects, and check what a local copy holds.

    kfr-mmlu subjects [--paper]
    kfr-mmlu check DIR [--subjects anatomy,astronomy]

Errors end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfr.builders.mmlu import subject_counts
from kfr.cli.console import refuse_unsupported_versions
from kfr.core.errors import USER_ERROR_EXIT_CODE, UserError
from kfr.data.mmlu import ALL, MMLU_SUBJECTS, PAPER_SUBJECTS, find_local_copy, parse_subjects


def main(argv: list[str] | None = None) -> int:
    refuse_unsupported_versions("kfr-mmlu")
    parser = argparse.ArgumentParser(prog="kfr-mmlu", description="MMLU subjects and local copies.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("subjects", help="list the 57 subjects (--paper: the 5 used)")
    listing.add_argument("--paper", action="store_true", help="only the paper's five subjects")
    check = commands.add_parser("check", help="count the questions of a local copy per subject")
    check.add_argument("dir", type=Path, help="data/ folder of the CSV release or parquet export")
    check.add_argument("--subjects", default=ALL, help="comma-separated subjects (default all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "subjects":
            print("\n".join(PAPER_SUBJECTS if args.paper else MMLU_SUBJECTS))
            return 0
        subjects = parse_subjects(args.subjects, "--subjects")
        copy = find_local_copy(args.dir)
        print(f"{copy.layout} copy at {copy.root}")
        for subject, counts in subject_counts(copy, subjects):
            print(f"  {subject:<40} test {counts['test']:>5}  dev {counts['dev']:>3}")
    except UserError as e:
        print(f"kfr-mmlu: {e}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``kfr-report SWEEP_DIR... [--out DIR]``: the comparison report of finished sweeps.

Prints the Markdown tables and writes report.md, cells.csv, one CSV per table and the PNG plots
into --out (default: ``report/`` inside the first directory given). Exit code 2 when no directory
holds any kfr cell; failed and missing cells are named in the report, not an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfr.cli.console import refuse_unsupported_versions
from kfr.core.errors import USER_ERROR_EXIT_CODE


def main(argv: list[str] | None = None) -> None:
    refuse_unsupported_versions("kfr-report")
    parser = argparse.ArgumentParser(
        prog="kfr-report",
        description="Aggregate kfr results (sweep directories, output roots or cell folders) "
        "into the paper's tables, with plots.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or output directories")
    parser.add_argument("--out", type=Path, default=None, help="default: <first dir>/report")
    parser.add_argument("--quiet", action="store_true", help="write files, print only paths")
    args = parser.parse_args(argv)

    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(
            f"kfr-report: error: not a directory: {', '.join(map(str, missing))}", file=sys.stderr
        )
        sys.exit(USER_ERROR_EXIT_CODE)
    from kfr.report import build_report, write_report  # matplotlib: not for --help or errors

    report = build_report(args.dirs)
    c = report.collected
    if not (c.cells or c.failed or c.incomplete or c.unreadable):
        print(
            f"kfr-report: error: no kfr cells (results.json / failed.json) under "
            f"{', '.join(map(str, args.dirs))}",
            file=sys.stderr,
        )
        sys.exit(USER_ERROR_EXIT_CODE)
    out = write_report(report, args.out or args.dirs[0] / "report")
    if not args.quiet:
        print(report.markdown())
    print(f"Report: {out / 'report.md'}")


if __name__ == "__main__":
    main()

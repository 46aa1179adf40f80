"""The ``kfr-kb`` command: build knowledge bases, and show the card of any dataset file.

    kfr-kb wikipedia --topic anatomy --pages "Anatomy" --depth 1 --limit 50 --out kb.jsonl
    kfr-kb wikipedia --preset anatomy --out kb/anatomy.jsonl
    kfr-kb wikipedia --revisions kb/anatomy.jsonl --out kb/anatomy-rebuilt.jsonl
    kfr-kb card kb/anatomy.jsonl

Errors end with one line on stderr and exit code 2; the output file and its card are written
only when the whole build succeeded. The builder itself is :mod:`kfr.builders.wikipedia`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kfr.builders.wikipedia import (
    DEFAULT_API,
    PRESETS,
    ChunkSettings,
    MediaWiki,
    WikipediaSpec,
    build_wikipedia_kb,
    mediawiki_policy,
    rebuild_wikipedia_kb,
)
from kfr.cli.console import refuse_unsupported_versions
from kfr.core.errors import USER_ERROR_EXIT_CODE, UserError
from kfr.core.http import CONTACT_ENV, HttpClient
from kfr.data.cards import read_card

PROG = "kfr-kb"


def _wikipedia_parser(commands) -> None:
    p = commands.add_parser(
        "wikipedia",
        help="central page(s) and the pages they link to, cleaned into chunks",
        description="Build a knowledge base from Wikipedia through the MediaWiki API "
        "(action=parse). Replies are cached: a failed or repeated build resumes without "
        "fetching again.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--pages", nargs="+", metavar="TITLE", help="central page title(s)")
    what.add_argument("--preset", choices=sorted(PRESETS), help="central pages of an MMLU subject")
    what.add_argument(
        "--revisions",
        type=Path,
        metavar="KB",
        help="rebuild a knowledge base written by this command from its exact revision ids",
    )
    p.add_argument("--out", type=Path, required=True, help="knowledge base to write (.jsonl)")
    p.add_argument("--topic", help="label stored in the card and every document's meta")
    p.add_argument("--depth", type=int, default=1, help="link hops from the central pages")
    p.add_argument("--limit", type=int, default=50, help="most pages in the knowledge base")
    settings = ChunkSettings()
    p.add_argument("--max-chars", type=int, default=None, help=f"default {settings.max_chars}")
    p.add_argument("--min-chars", type=int, default=None, help=f"default {settings.min_chars}")
    p.add_argument("--api", default=DEFAULT_API, help="MediaWiki API endpoint (api.php)")
    p.add_argument("--cache-dir", type=Path, help="raw replies (default <kfr cache>/wikipedia)")
    p.add_argument("--refresh", action="store_true", help="fetch again even when cached")
    p.add_argument("--rate", type=float, default=2.0, help="most requests per second (default 2)")
    p.add_argument("--retries", type=int, default=5, help="retries per request (backoff 1s, x2)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait in seconds")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument(
        "--contact", help=f"your e-mail or URL for the User-Agent (default ${CONTACT_ENV})"
    )
    p.add_argument("--quiet", action="store_true", help="no per-page progress")


def _run_wikipedia(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() != ".jsonl":
        raise UserError("the knowledge base must be a .jsonl file", path=args.out, field="--out")
    if args.rate <= 0:
        raise UserError(f"must be positive, got {args.rate}", field="--rate")
    policy = mediawiki_policy(
        args.rate,
        retries=args.retries,
        backoff_s=args.backoff,
        timeout_s=args.timeout,
        contact=args.contact,
    )
    wiki = MediaWiki(
        args.api, cache_dir=args.cache_dir, http=HttpClient(policy), refresh=args.refresh
    )

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if args.revisions is not None:
        documents, report, comparison = rebuild_wikipedia_kb(
            args.revisions,
            args.out,
            wiki=wiki,
            max_chars=args.max_chars,
            min_chars=args.min_chars,
            progress=progress,
        )
        print(
            f"rebuilt {len(documents)} chunks of {len(report.pages)} revisions to {args.out}: "
            f"{comparison['identical']} identical to {args.revisions}, "
            f"{comparison['changed_or_new']} changed or new"
        )
        return 0
    defaults = ChunkSettings()
    pages = list(PRESETS[args.preset]) if args.preset else args.pages
    spec = WikipediaSpec(
        topic=args.topic or args.preset,
        pages=pages,
        depth=args.depth,
        limit=args.limit,
        api=args.api,
        max_chars=args.max_chars if args.max_chars is not None else defaults.max_chars,
        min_chars=args.min_chars if args.min_chars is not None else defaults.min_chars,
    )
    documents, report = build_wikipedia_kb(spec, args.out, wiki=wiki, progress=progress)
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items()))
    print(
        f"wrote {len(documents)} chunks of {len(report.pages)} pages to {args.out} "
        f"({wiki.fetched} fetched, {wiki.cached} from the cache"
        + (f"; skipped {skipped}" if skipped else "")
        + ")"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    refuse_unsupported_versions(PROG)
    parser = argparse.ArgumentParser(prog=PROG, description="Build and inspect knowledge bases.")
    commands = parser.add_subparsers(dest="command", required=True)
    _wikipedia_parser(commands)
    card = commands.add_parser("card", help="print the card of a dataset file")
    card.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "wikipedia":
            return _run_wikipedia(args)
        found = read_card(args.path)
        if found is None:
            raise UserError("no card beside this file", path=args.path)
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())

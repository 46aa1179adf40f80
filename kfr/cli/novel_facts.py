"""The ``kfr-novel-facts`` command: write the synthetic novel-facts dataset (knowledge base,
questions, paraphrases, version 2's probe files, card) into a directory.

    kfr-novel-facts --out data/novel_facts --entities 40 --seed 0 --paraphrases 8 --version 2

A bad spec ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kfr.cli.console import refuse_unsupported_versions
from kfr.core.errors import USER_ERROR_EXIT_CODE, UserError
from kfr.data.novel_facts import NovelFactsSpec, write_novel_facts


def main(argv: list[str] | None = None) -> int:
    refuse_unsupported_versions("kfr-novel-facts")
    parser = argparse.ArgumentParser(
        prog="kfr-novel-facts",
        description="Write the synthetic novel-facts dataset (knowledge base, questions, "
        "paraphrases, card).",
    )
    defaults = NovelFactsSpec()
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--entities", type=int, default=defaults.n_entities)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--paraphrases", type=int, default=defaults.n_paraphrases)
    parser.add_argument(
        "--version", type=int, default=defaults.version, help="generator version (1 or 2)"
    )
    args = parser.parse_args(argv)
    try:
        spec = NovelFactsSpec(
            n_entities=args.entities,
            seed=args.seed,
            n_paraphrases=args.paraphrases,
            version=args.version,
        )
        paths = write_novel_facts(spec, args.out)
    except UserError as e:
        print(f"kfr-novel-facts: {e}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    counts = json.loads(paths["card"].read_text(encoding="utf-8"))["counts"]
    probes = "".join(f", {n} {family} probes" for family, n in counts.get("probes", {}).items())
    print(
        f"wrote {counts['documents']} documents ({counts['knowledge_characters']} characters), "
        f"{counts['questions']} questions{probes} and {counts['paraphrases']} paraphrases to "
        f"{args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

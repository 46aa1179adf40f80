"""The ``kfr-questions`` command: four-option questions from a knowledge base with an LLM.

    kfr-questions --knowledge kb/anatomy.jsonl --out questions/anatomy.jsonl \\
        --backend openai --model gpt-4o-mini --rejects questions/anatomy.rejects.jsonl

The recipe is :mod:`kfr.builders.questions`. Errors end with one line on stderr and exit code 2;
the questions and their card are written only when at least one question passed the checks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from platformdirs import user_cache_dir

from kfr.builders.questions import (
    PROMPT_STYLES,
    QuestionSpec,
    drop_known_without_context,
    generate_questions,
    leakage_model,
    summary,
    write_question_set,
    write_rejects,
)
from kfr.cli.console import quiet_libraries, refuse_unsupported_versions
from kfr.core.errors import USER_ERROR_EXIT_CODE, UserError
from kfr.data.cards import read_card
from kfr.data.knowledge_base import read_knowledge_base
from kfr.generation.backends import add_backend_arguments, generator_from_args

PROG = "kfr-questions"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate four-option questions from a knowledge base with an LLM "
        "(the paper's current-events recipe). Paraphrases of a knowledge base are made by the "
        "fine-tuning tools, with the same backend flags.",
    )
    parser.add_argument("--knowledge", type=Path, required=True, help="knowledge base (.jsonl/dir)")
    parser.add_argument("--out", type=Path, required=True, help="questions to write (.jsonl)")
    d = QuestionSpec()
    parser.add_argument("--per-chunk", type=int, default=d.per_chunk, help="asked per chunk")
    parser.add_argument("--keep", type=int, default=d.keep, help="most specific kept per chunk")
    parser.add_argument("--min-specificity", type=float, default=d.min_specificity)
    parser.add_argument(
        "--min-support",
        type=float,
        default=d.min_support,
        help="least share of a question's (IDF-weighted) words found in its own chunk",
    )
    parser.add_argument("--limit-chunks", type=int, help="use only the first N chunks")
    parser.add_argument("--subject", help="subject of every question (default: the KB's topic)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-shuffle", action="store_true", help="keep the LLM's option order")
    parser.add_argument("--json-retries", type=int, default=d.json_retries)
    parser.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default=d.prompt_style,
        help="detailed: instructions, per-chunk questions per request (strong models); "
        "simple: one question per request after a worked example (small local models)",
    )
    parser.add_argument("--max-chunk-chars", type=int, default=d.max_chunk_chars)
    parser.add_argument("--min-chunk-chars", type=int, default=d.min_chunk_chars)
    parser.add_argument(
        "--leakage-filter",
        action="store_true",
        help="drop questions a base model answers correctly without context",
    )
    parser.add_argument(
        "--leakage-model",
        help="kfr model config for the leakage filter (default: the local generator's model, "
        "else smollm2_135m)",
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        help="write rejected candidates, and replies with no JSON, here (.jsonl) for inspection",
    )
    parser.add_argument("--cache-dir", type=Path, help="kfr cache (models, endpoint replies)")
    parser.add_argument("--quiet", action="store_true")
    add_backend_arguments(parser, max_new_tokens=512, temperature=0.7)
    return parser


def main(argv: list[str] | None = None) -> int:
    refuse_unsupported_versions(PROG)
    args = _parser().parse_args(argv)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        if args.out.suffix.lower() != ".jsonl":
            raise UserError("the questions file must be .jsonl", path=args.out, field="--out")
        documents = read_knowledge_base(args.knowledge)
        kb_card = read_card(args.knowledge) if args.knowledge.is_file() else None
        subject = args.subject
        if subject is None and kb_card is not None:
            subject = (kb_card.get("settings") or {}).get("topic")
        spec = QuestionSpec(
            per_chunk=args.per_chunk,
            keep=args.keep,
            min_specificity=args.min_specificity,
            min_support=args.min_support,
            shuffle=not args.no_shuffle,
            seed=args.seed,
            json_retries=args.json_retries,
            max_chunk_chars=args.max_chunk_chars,
            min_chunk_chars=args.min_chunk_chars,
            subject=subject,
            prompt_style=args.prompt_style,
        )
        chosen = documents[: args.limit_chunks] if args.limit_chunks else documents
        cache_dir = args.cache_dir or _default_cache_dir()
        quiet_libraries()  # no per-load progress bars from transformers
        t0 = time.perf_counter()
        generator, backend = generator_from_args(
            args, cache_dir=cache_dir, reply_cache=Path(cache_dir) / "generation" / "replies"
        )
        load_s = time.perf_counter() - t0
        say(f"{backend['backend']} backend, model {backend['model']} ({load_s:.1f} s to load)")
        result = generate_questions(chosen, generator, spec, knowledge_base=documents, progress=say)
        result.timings["load_backend_s"] = round(load_s, 2)
        if args.leakage_filter:
            lm = leakage_model(generator, args.leakage_model, cache_dir)
            result = drop_known_without_context(result, lm)
        if args.rejects:  # written even when nothing passes: it is how one finds out why
            write_rejects(args.rejects, result)
        if not result.questions:
            raise UserError(
                f"no question passed the checks ({summary(result.counts)}); nothing written. "
                "Use --rejects FILE to see why, or a stronger model"
            )
        write_question_set(
            args.out,
            result,
            spec,
            knowledge=args.knowledge,
            knowledge_card=kb_card,
            generator=backend,
            limit_chunks=args.limit_chunks,
            leakage_filter=args.leakage_filter,
            rejects=args.rejects,
        )
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    print(
        f"wrote {len(result.questions)} questions from {result.counts['chunks_with_questions']} "
        f"of {len(chosen)} chunks to {args.out} ({summary(result.counts)}; "
        f"{result.timings['total_s']} s)"
    )
    return 0


def _default_cache_dir() -> Path:
    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))


if __name__ == "__main__":
    sys.exit(main())

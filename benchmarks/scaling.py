"""How kfr's cost grows with the knowledge base: index build, RAG scoring, one fine-tuning epoch.

For each knowledge-base size (``--sizes``, default 1k, 10k and 100k documents) three stages run,
each as its own kfr command in a child process (kfr's real code path, Hydra overrides), against a
cache directory of its own per size, so nothing is reused between sizes:

1. ``build``: ``kfr-index`` from an empty cache: chunk, embed (``retriever=minilm``, the embedded
   MiniLM) and build kfr's default FAISS index (``kfr.retrieval.cache.ensure_index``);
2. ``rag``: ``kfr method=rag``, the cell of one RAG run: ``--questions`` questions scored by
   ``--model`` (default the embedded SmolLM2-135M) with the top ``retriever.k`` chunks (default 3),
   the index of stage 1 found in the cache (checked: a rebuilt index stops the benchmark);
3. ``ft``: ``kfr method=ft finetune.epochs=1 eval.control=null``: one epoch of kfr's default
   fine-tuning (full, blocks of 128, batch 4, CPU) of ``--ft-model`` over the documents (the first
   ``--ft-max-docs`` when set), then the first entity's 6 questions scored. The default FT model
   is ``tiny_llama`` (a random 2-layer Llama with SmolLM2's tokenizer), so a full epoch really
   runs at every size and the growth measured is that of kfr's pipeline (tokenising, packing,
   data loading, the training loop, saving); ``--ft-model smollm2_135m --ft-max-docs N`` trains
   the real model on at most N documents (about 150 tokens/s on 2 CPU cores).

Per stage and size: wall time, CPU time (user + system) and peak RSS, from ``os.wait4`` on the
stage's process (so they are that stage's alone, interpreter start-up and imports included);
the tokens involved (build: encoder tokens of the embedded chunks; rag: tokens of the scored
sequences, prompt and answer options; ft: tokens trained); and "kfr s", kfr's own timing of the
stage's work without process start-up (build: ``embed_s + build_s`` of the index manifests; rag:
``timings.total_s`` of results.json, model loading included; ft: ``finetune.wall_s``, the fit and
the save). Then the growth: the log-log slope of each time against the knowledge base's tokens
(the documents under ``--model``'s tokenizer) between consecutive sizes and fitted over all
sizes (1.0 = linear), the fixed and per-token parts of a linear fit, and a verdict per stage:
linear (slope in [0.9, 1.1]), sub-linear, super-linear. A stage with a large fixed part (model
loading, imports) shows a sub-linear wall time even when its work is linear: compare the "kfr"
rows. RAG scoring should hardly grow at all: only reading the knowledge base, checking the cached
index and the exact search depend on its size: its own growth row, "rag KB part" (results.json
``timings.data_s`` less the encoder's loading: reading and checking the knowledge base, checking
and loading the cached chunks and index, embedding the questions, the search).

Knowledge bases: novel-facts biographies made with the generator's own building blocks
(``kfr.data.novel_facts``: its entity, document and question makers, its name syllables and fact
pools). ``data=novel_facts`` caps at 5000 people (``MAX_ENTITIES``), so the benchmark draws the
people itself: every one of the 102,400 possible names once, in an order shuffled by ``--seed``,
facts and questions drawn per person from a generator seeded by (seed, position). The knowledge
base of N documents is therefore the first N of one fixed list (each size is a prefix of the next)
and every name is unique, so the questions of the first ``ceil(questions / 6)`` people, the ones
scored at every size, have one right document among N. Files are written in kfr's own formats
(``knowledge.jsonl``, ``questions.jsonl``) and read through ``data=custom``.

Model caches: the converted embedded model (the GGUF → safetensors conversion) and tiny_llama's
random checkpoint live under ``<cache>/models/``. They come from ``--model-cache`` (default:
``KFR_CACHE_DIR`` or the user cache dir, the cache kfr and the tests use), linked into each size's
fresh cache as ``models/``, so they are prepared once and never timed. A warm-up runs the three
stages once on a 20-document knowledge base first (converting the models if needed and loading
every file once from disk); its figures are printed but excluded (``--no-warmup`` skips it).

Run from the repository root (each stage line prints as it finishes; ``python
benchmarks/scaling.py`` works too)::

    .venv/bin/python -m benchmarks.scaling [--sizes 1000 10000 100000] [--questions 100]
        [--model smollm2_135m] [--ft-model tiny_llama] [--ft-max-docs N] [--json FILE]

``--set KEY=VALUE`` adds a Hydra override to every stage (e.g.
``--set retriever.index=HNSW32``); ``--keep --work-dir DIR`` keeps the knowledge bases, caches,
run directories and each stage's log (``<size>/<stage>.log``). On cores other jobs share, wall
times follow their load (each stage records the load average when it ended) and ``--threads 1``
(``OMP_NUM_THREADS`` for every stage) gives steadier figures.

This module is the command (arguments, the run, the output); the rest is beside it:
``scaling_people`` (the knowledge bases), ``scaling_stages`` (the three stages, each measured in
its own process) and ``scaling_report`` (the growth figures and the tables).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

if not __package__:  # run as `python benchmarks/scaling.py`: import benchmarks.* as with -m
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scaling_people import MAX_DOCS, QUESTIONS_PER_PERSON, all_names, make_people
from benchmarks.scaling_report import (
    LINEAR_HIGH,
    LINEAR_LOW,
    detail_tables,
    fitted_slope,
    growth,
    growth_table,
    linear_fit,
    slope,
    stage_table,
    verdict,
    verdict_lines,
)
from benchmarks.scaling_stages import STAGES, Counter, Row, Settings, run_size

# The command is main; the rest is what tests/integration/test_scaling_benchmark.py reads here.
__all__ = [
    "MAX_DOCS",
    "STAGES",
    "all_names",
    "fitted_slope",
    "linear_fit",
    "main",
    "make_people",
    "slope",
    "verdict",
]

WARMUP_DOCS = 20


def default_model_cache() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--questions", type=int, default=100, help="questions scored by the rag stage")
    p.add_argument("--model", default="smollm2_135m", help="the rag stage's model (conf/model)")
    p.add_argument("--ft-model", default="tiny_llama", help="the ft stage's model (conf/model)")
    p.add_argument(
        "--ft-max-docs", type=int, default=None, help="train on at most this many documents"
    )
    p.add_argument("--retriever", default="minilm", help="conf/retriever")
    p.add_argument("--seed", type=int, default=0, help="which people, in which order")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="a Hydra override for every stage (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--model-cache", type=Path, default=None,
        help="cache whose models/ (converted checkpoints) every stage shares "
        "(default: KFR_CACHE_DIR or the user cache dir)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None,
        help="OMP_NUM_THREADS for every stage (default: torch's own choice); 1 gives steadier "
        "figures on cores other jobs share",
    )  # fmt: skip
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    sizes = sorted(set(args.sizes))
    people_asked = math.ceil(args.questions / QUESTIONS_PER_PERSON)
    if args.questions < 1:
        p.error("--questions must be at least 1")
    if sizes[0] < max(3, people_asked) or sizes[-1] > MAX_DOCS:
        p.error(
            f"--sizes must lie in [{max(3, people_asked)}, {MAX_DOCS}]: at least the "
            f"{people_asked} people the questions ask about, and at least 3 chunks for K=3; "
            f"at most the {MAX_DOCS} names the generator's syllables make"
        )
    if args.ft_max_docs is not None and args.ft_max_docs < 2:
        p.error("--ft-max-docs must be at least 2 (one training block of 128 tokens)")
    args.sizes = sizes
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        model=args.model,
        ft_model=args.ft_model,
        retriever=args.retriever,
        questions=args.questions,
        ft_max_docs=args.ft_max_docs,
        sets=list(args.sets),
        model_cache=(args.model_cache or default_model_cache()).resolve(),
        threads=args.threads,
    )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kfr-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    print(
        f"kfr scaling: sizes {args.sizes}, {args.questions} questions, rag model {args.model}, "
        f"ft model {args.ft_model}"
        + (f" (at most {args.ft_max_docs} documents)" if args.ft_max_docs else "")
        + f", retriever {args.retriever}; work dir {work}; model cache "
        f"{settings.model_cache / 'models'}",
        flush=True,
    )
    started = time.perf_counter()
    people = make_people(max(args.sizes[-1], WARMUP_DOCS), args.seed)
    counter = Counter(settings)
    per_doc = counter.document_tokens(people.documents)  # may convert the model: before timing
    prefix_tokens = [0]
    for count in per_doc:
        prefix_tokens.append(prefix_tokens[-1] + count)
    print(
        f"knowledge base: {len(people.documents)} people generated, "
        f"{prefix_tokens[-1] / len(per_doc):.1f} tokens per document ({args.model}'s tokenizer)",
        flush=True,
    )

    warmup: list[Row] = []
    if not args.no_warmup:
        # Converts the models into the shared cache if needed and reads every file once.
        warm = Settings(**{**asdict(settings), "questions": min(args.questions, 6)})
        warmup = run_size(
            WARMUP_DOCS, people, prefix_tokens, work / "warmup", warm, counter,
            label="warm-up, excluded",
        )  # fmt: skip
    rows: list[Row] = []
    for size in args.sizes:
        root = work / f"n{size}"
        if root.exists():
            shutil.rmtree(root)
        rows += run_size(size, people, prefix_tokens, root, settings, counter)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)  # 100k documents: hundreds of MB of cache
    entries = growth(rows)

    print("\n## Stages\n")
    print(stage_table(rows))
    print("\n## Growth with the knowledge base (log-log slope of time vs KB tokens; 1 = linear)\n")
    print(growth_table(entries))
    print()
    print("\n".join(verdict_lines(entries)))
    print("\n## Details\n")
    print(detail_tables(rows))
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s", flush=True)

    if args.json:
        payload = {
            "settings": {
                "sizes": args.sizes,
                "questions": args.questions,
                "model": args.model,
                "ft_model": args.ft_model,
                "ft_max_docs": args.ft_max_docs,
                "retriever": args.retriever,
                "seed": args.seed,
                "sets": args.sets,
                "threads": args.threads,
                "linear_range": [LINEAR_LOW, LINEAR_HIGH],
            },
            "rows": [asdict(r) for r in rows],
            "growth": entries,
            "warmup": [asdict(r) for r in warmup],
            "total_s": round(total, 1),
            "machine": {"cpus": os.cpu_count(), "load_avg": list(os.getloadavg())},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}", flush=True)
    if args.work_dir is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

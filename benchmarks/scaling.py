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

Run from the repository root (each stage line prints as it finishes)::

    .venv/bin/python -m benchmarks.scaling [--sizes 1000 10000 100000] [--questions 100]
        [--model smollm2_135m] [--ft-model tiny_llama] [--ft-max-docs N] [--json FILE]

``--set KEY=VALUE`` adds a Hydra override to every stage (e.g.
``--set retriever.index=HNSW32``); ``--keep --work-dir DIR`` keeps the knowledge bases, caches,
run directories and each stage's log (``<size>/<stage>.log``). On cores other jobs share, wall
times follow their load (each stage records the load average when it ended) and ``--threads 1``
(``OMP_NUM_THREADS`` for every stage) gives steadier figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kfr.data import novel_facts as nf
from kfr.data.knowledge_base import write_knowledge_base_jsonl
from kfr.data.questions import write_questions_jsonl
from kfr.data.schema import Document, Question

STAGES = ("build", "rag", "ft")
TOKENS_KIND = {
    "build": "encoder tokens embedded",
    "rag": "tokens scored",
    "ft": "tokens trained",
}
WORK_KIND = {
    "build": "embed_s + build_s (index manifests)",
    "rag": "results.json timings.total_s",
    "ft": "results.json finetune.wall_s",
}
QUESTIONS_PER_PERSON = len(nf.ATTRIBUTES)
LINEAR_LOW, LINEAR_HIGH = 0.9, 1.1  # a log-log slope in this range counts as linear
WARMUP_DOCS = 20
DOC_WIDTH = 6  # person-000001: the same id for a person at every size


# ----------------------------------------------------------------------------- knowledge bases


def all_names(seed: int) -> list[str]:
    """Every name the generator's syllables make, each once, in an order shuffled by ``seed``."""
    names = dict.fromkeys(
        f"{onset}{ending} {stem}{last}"
        for onset in nf.FIRST_NAME_ONSETS
        for ending in nf.FIRST_NAME_ENDINGS
        for stem in nf.LAST_NAME_STEMS
        for last in nf.LAST_NAME_ENDINGS
    )
    shuffled = list(names)
    random.Random(f"scaling/{seed}").shuffle(shuffled)
    return shuffled


MAX_DOCS = len(all_names(0))


@dataclass
class People:
    """The first ``n`` people of the fixed list: documents and their questions."""

    documents: list[Document]
    questions: list[list[Question]]  # per person, the 6 questions in ATTRIBUTES order


def make_people(n: int, seed: int) -> People:
    if not 1 <= n <= MAX_DOCS:
        raise ValueError(f"between 1 and {MAX_DOCS} documents, got {n}")
    documents, questions = [], []
    for i, name in enumerate(all_names(seed)[:n]):
        rng = random.Random(f"scaling/{seed}/{i}")
        entity = nf._Entity(
            doc_id=f"person-{i + 1:0{DOC_WIDTH}d}",
            name=name,
            facts=tuple((a, rng.choice(nf.DOMAINS[a])) for a in nf.ATTRIBUTES),
        )
        documents.append(nf._document(entity))
        questions.append(nf._questions(rng, entity))
    return People(documents, questions)


def first_questions(people: People, n: int) -> list[Question]:
    return [q for per_person in people.questions for q in per_person][:n]


@dataclass
class KnowledgeFiles:
    knowledge: Path
    questions: Path
    ft_knowledge: Path
    ft_questions: Path
    docs: int
    ft_docs: int


def write_knowledge(
    out: Path, people: People, docs: int, questions: int, ft_docs: int
) -> KnowledgeFiles:
    """The first ``docs`` documents and the first ``questions`` questions in kfr's formats; the
    fine-tuning stage's copies hold the first ``ft_docs`` documents and the first person's
    questions."""
    out.mkdir(parents=True, exist_ok=True)
    files = KnowledgeFiles(
        out / "knowledge.jsonl",
        out / "questions.jsonl",
        out / "knowledge.jsonl" if ft_docs == docs else out / "ft_knowledge.jsonl",
        out / "ft_questions.jsonl",
        docs,
        ft_docs,
    )
    write_knowledge_base_jsonl(files.knowledge, people.documents[:docs])
    write_questions_jsonl(files.questions, first_questions(people, questions))
    if ft_docs != docs:
        write_knowledge_base_jsonl(files.ft_knowledge, people.documents[:ft_docs])
    write_questions_jsonl(files.ft_questions, first_questions(people, QUESTIONS_PER_PERSON))
    return files


# ----------------------------------------------------------------------------- measuring


@dataclass
class Usage:
    wall_s: float
    cpu_s: float
    peak_rss_mib: float


def run_measured(cmd: Sequence[str], log_path: Path, env: dict[str, str], cwd: Path) -> Usage:
    """Run ``cmd`` to the end; its wall time, CPU time and peak RSS (``os.wait4``: this process
    and the children it waited for, nothing else). Output goes to ``log_path``."""
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise RuntimeError(
            f"exit code {process.returncode}: {' '.join(cmd)}\n(log {log_path})\n" + "\n".join(tail)
        )
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return Usage(wall, usage.ru_utime + usage.ru_stime, rss)


def command(script: str, module: str) -> list[str]:
    """The console script installed beside this Python, else ``python -m module``."""
    installed = Path(sys.executable).parent / script
    return [str(installed)] if installed.is_file() else [sys.executable, "-m", module]


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="disabled",
    )
    if threads:  # torch reads these at start-up; unset = its default (the physical cores)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


# ----------------------------------------------------------------------------- stages


@dataclass
class Settings:
    model: str
    ft_model: str
    retriever: str
    questions: int
    ft_max_docs: int | None
    sets: list[str]
    model_cache: Path
    threads: int | None = None


@dataclass
class Row:
    size: int  # documents in the knowledge base
    stage: str
    docs: int  # documents the stage reads (ft: at most --ft-max-docs)
    kb_tokens: int  # those documents' tokens (--model's tokenizer)
    tokens: int
    tokens_kind: str
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    work_s: float
    work_kind: str
    details: dict[str, Any] = field(default_factory=dict)


def fresh_cache(root: Path, model_cache: Path) -> Path:
    """An empty cache directory whose ``models/`` is the shared model cache's."""
    cache = root / "cache"
    cache.mkdir(parents=True)
    shared = model_cache / "models"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(shared.resolve(), target_is_directory=True)
    return cache


def _data_overrides(knowledge: Path, questions: Path, cache: Path, s: Settings) -> list[str]:
    return [
        "data=custom",
        f"data.knowledge={knowledge}",
        f"data.questions={questions}",
        f"paths.cache_dir={cache}",
        f"retriever={s.retriever}",
        *s.sets,
    ]


def _index_files(cache: Path) -> tuple[Path, Path]:
    """The one embeddings directory and its one index directory under ``cache``."""
    embeddings = [p for p in (cache / "indices").glob("*") if (p / "embeddings.npy").is_file()]
    if len(embeddings) != 1:
        raise RuntimeError(f"expected one index under {cache / 'indices'}, found {embeddings}")
    indices = [p for p in embeddings[0].iterdir() if (p / "index.faiss").is_file()]
    if len(indices) != 1:
        raise RuntimeError(f"expected one FAISS index under {embeddings[0]}, found {indices}")
    return embeddings[0], indices[0]


class Counter:
    """Token counts, loaded once in this (unmeasured) process: ``--model``'s tokenizer for the
    documents, the retriever's for the embedded chunks."""

    def __init__(self, s: Settings) -> None:
        self.settings = s
        self._cfg = None
        self._encoder = None

    def _config(self):
        if self._cfg is None:
            from hydra import compose, initialize_config_dir

            import kfr.core.identity  # noqa: F401  (registers the schema and kfr's resolvers)
            from kfr.core.paths import CONFIG_DIR
            from kfr.core.schema import typed_config

            s = self.settings
            overrides = [f"model={s.model}", f"retriever={s.retriever}"]
            overrides += [o for o in s.sets if o.split("=")[0].startswith("retriever.")]
            overrides.append(f"paths.cache_dir={s.model_cache}")
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                self._cfg = typed_config(compose("config", overrides=overrides))
        return self._cfg

    def document_tokens(self, documents: Sequence[Document]) -> list[int]:
        """Each document's tokens under ``--model``'s tokenizer (no special tokens)."""
        from kfr.models.loading import load_tokenizer

        cfg = self._config()
        tokenizer = load_tokenizer(cfg.model, cfg.paths.cache_dir)
        counts: list[int] = []
        for start in range(0, len(documents), 10_000):
            texts = [d.text for d in documents[start : start + 10_000]]
            counts += [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return counts

    def chunk_tokens(self, chunks_file: Path) -> tuple[int, int]:
        """(chunks, encoder tokens of what was embedded: passage prefix + chunk text)."""
        from kfr.retrieval.encoders import load_encoder

        cfg = self._config()
        if self._encoder is None:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._encoder = load_encoder(cfg.retriever)
        with chunks_file.open(encoding="utf-8") as f:
            texts = [cfg.retriever.passage_prefix + json.loads(line)["text"] for line in f]
        total = 0
        for start in range(0, len(texts), 10_000):
            total += sum(self._encoder.count_tokens(texts[start : start + 10_000]))
        return len(texts), total


def run_size(
    size: int,
    people: People,
    prefix_tokens: list[int],
    root: Path,
    s: Settings,
    counter: Counter,
    *,
    label: str | None = None,
) -> list[Row]:
    """The three stages on the first ``size`` documents, in a fresh cache under ``root``."""
    label = label or f"{size} docs"
    ft_docs = min(size, s.ft_max_docs or size)
    files = write_knowledge(root / "data", people, size, s.questions, ft_docs)
    cache = fresh_cache(root, s.model_cache)
    env, cwd = child_env(s.threads), root
    kfr = command("kfr", "kfr.cli")
    rows = []

    def row(stage: str, docs: int, usage: Usage, tokens: int, work_s: float, details) -> Row:
        made = Row(
            size=size,
            stage=stage,
            docs=docs,
            kb_tokens=prefix_tokens[docs],
            tokens=tokens,
            tokens_kind=TOKENS_KIND[stage],
            wall_s=round(usage.wall_s, 2),
            cpu_s=round(usage.cpu_s, 2),
            peak_rss_mib=round(usage.peak_rss_mib, 1),
            work_s=round(work_s, 2),
            work_kind=WORK_KIND[stage],
            # Other jobs on the same cores slow a stage down: the load when it ended.
            details={**details, "load_avg_1m": round(os.getloadavg()[0], 2)},
        )
        print(
            f"[{label}] {stage}: wall {made.wall_s:.2f} s, CPU {made.cpu_s:.2f} s, peak RSS "
            f"{made.peak_rss_mib:.1f} MiB, kfr {made.work_s:.2f} s; {made.docs} documents, "
            f"{made.kb_tokens:,} KB tokens, {made.tokens:,} {made.tokens_kind}",
            flush=True,
        )
        rows.append(made)
        return made

    # 1. Index build from an empty cache.
    overrides = _data_overrides(files.knowledge, files.questions, cache, s)
    usage = run_measured(
        [*command("kfr-index", "kfr.cli.index"), *overrides], root / "build.log", env, cwd
    )
    embeddings_dir, index_dir = _index_files(cache)
    embed = json.loads((embeddings_dir / "manifest.json").read_text(encoding="utf-8"))
    built = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    chunks, encoder_tokens = counter.chunk_tokens(embeddings_dir / "chunks.jsonl")
    row(
        "build",
        size,
        usage,
        encoder_tokens,
        embed["embed_s"] + built["build_s"],
        {"chunks": chunks, "embed_s": embed["embed_s"], "index_build_s": built["build_s"],
         "index": built["spec"], "vectors": built["vectors"]},
    )  # fmt: skip

    # 2. RAG scoring with the cached index.
    run_dir = root / "runs" / "rag"
    cell = [
        "method=rag",
        f"model={s.model}",
        "logger=none",
        "eval.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    usage = run_measured([*kfr, *overrides, *cell], root / "rag.log", env, cwd)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    retrieval = results["retrieval"]
    if not retrieval["index_reused"]:
        raise RuntimeError(f"the rag stage rebuilt the index (log {root / 'rag.log'})")
    timings = results["timings"]
    row(
        "rag",
        size,
        usage,
        results["scoring"]["tokens"],
        timings["total_s"],
        {"questions": results["metrics"]["n"], "k": retrieval["k"], "chunks": retrieval["chunks"],
         "kb_part_s": round(timings["data_s"] - retrieval["timings"]["load_encoder_s"], 3),
         "data_s": timings["data_s"], "load_model_s": timings["load_model_s"],
         "score_s": timings["score_s"], "retrieval_timings": retrieval["timings"],
         "acc": results["metrics"]["acc"], "recall_at_1": results["metrics"].get("recall_at_1")},
    )  # fmt: skip

    # 3. One fine-tuning epoch (a cache of its own: the index is not needed).
    ft_cache = fresh_cache(root / "ft", s.model_cache)
    run_dir = root / "runs" / "ft"
    cell = [
        "method=ft",
        f"model={s.ft_model}",
        "finetune.epochs=1",
        "eval.control=null",
        "logger=none",
        "eval.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    ft_overrides = _data_overrides(files.ft_knowledge, files.ft_questions, ft_cache, s)
    usage = run_measured([*kfr, *ft_overrides, *cell], root / "ft.log", env, cwd)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    summary = results["finetune"]
    if summary["reused"]:
        raise RuntimeError(f"the ft stage reused a checkpoint (log {root / 'ft.log'})")
    row(
        "ft",
        ft_docs,
        usage,
        summary["tokens"],
        summary["wall_s"],
        {"model": s.ft_model, "steps": summary["steps"], "blocks": summary["blocks_per_epoch"],
         "tokens_per_s": summary["tokens_per_s"], "loss_first": summary["train_loss_first"],
         "loss_last": summary["train_loss_last"], "data_s": results["timings"]["data_s"],
         "total_s": results["timings"]["total_s"]},
    )  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- growth


def slope(x1: float, t1: float, x2: float, t2: float) -> float:
    """d log t / d log x between two points; NaN where undefined."""
    if min(x1, x2, t1, t2) <= 0 or x1 == x2:
        return math.nan
    return math.log(t2 / t1) / math.log(x2 / x1)


def fitted_slope(xs: Sequence[float], ts: Sequence[float]) -> float:
    """Least-squares slope of log t against log x; NaN with fewer than two distinct x."""
    points = [(math.log(x), math.log(t)) for x, t in zip(xs, ts, strict=True) if x > 0 and t > 0]
    if len(points) < len(xs) or len({p[0] for p in points}) < 2:
        return math.nan
    mx = sum(p[0] for p in points) / len(points)
    mt = sum(p[1] for p in points) / len(points)
    return sum((x - mx) * (t - mt) for x, t in points) / sum((x - mx) ** 2 for x, _ in points)


def linear_fit(xs: Sequence[float], ts: Sequence[float]) -> tuple[float, float]:
    """(a, b) of t = a + b x by least squares; NaNs with fewer than two distinct x."""
    if len(set(xs)) < 2:
        return math.nan, math.nan
    mx, mt = sum(xs) / len(xs), sum(ts) / len(ts)
    b = sum((x - mx) * (t - mt) for x, t in zip(xs, ts, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return mt - b * mx, b


def verdict(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if value < LINEAR_LOW:
        return "sub-linear"
    if value > LINEAR_HIGH:
        return "super-linear"
    return "linear"


MEASURES = (
    ("wall", lambda r: r.wall_s),
    ("CPU", lambda r: r.cpu_s),
    ("kfr", lambda r: r.work_s),
)


def _clean(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def growth(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per stage and time measure: log-log slopes between consecutive sizes, the fitted slope
    and its verdict; the marginal seconds per million KB tokens between consecutive sizes (flat
    when the time is linear with a fixed part, rising when super-linear); and the fixed and
    per-million-token seconds of a linear fit over all sizes."""
    out = []
    for stage in STAGES:
        mine = sorted((r for r in rows if r.stage == stage), key=lambda r: r.size)
        measures = list(MEASURES)
        if stage == "rag":  # the part of a RAG cell that reads the knowledge base
            measures.append(("KB part", lambda r: r.details["kb_part_s"]))
        for name, get in measures:
            xs, ts = [r.kb_tokens for r in mine], [get(r) for r in mine]
            between = {
                f"{a.size}→{b.size}": _clean(slope(a.kb_tokens, get(a), b.kb_tokens, get(b)), 3)
                for a, b in itertools.pairwise(mine)
            }
            marginal = {
                f"{a.size}→{b.size}": _clean(
                    (get(b) - get(a)) / (b.kb_tokens - a.kb_tokens) * 1e6
                    if b.kb_tokens != a.kb_tokens
                    else math.nan,
                    2,
                )
                for a, b in itertools.pairwise(mine)
            }
            fit = fitted_slope(xs, ts)
            fixed, per_token = linear_fit(xs, ts)
            out.append(
                {
                    "stage": stage,
                    "measure": name,
                    "slopes": between,
                    "fit_slope": _clean(fit, 3),
                    "verdict": verdict(fit),
                    "marginal_s_per_mtok": marginal,
                    "fixed_s": _clean(fixed, 2),
                    "s_per_mtok": _clean(per_token * 1e6, 2),
                }
            )
    return out


# ----------------------------------------------------------------------------- output


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def stage_table(rows: Sequence[Row]) -> str:
    lines = [
        "| size | stage | docs | KB tokens | tokens | tokens are | wall s | CPU s | "
        "peak RSS MiB | kfr s |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size} | {r.stage} | {r.docs} | {r.kb_tokens} | {r.tokens} | {r.tokens_kind} "
            f"| {r.wall_s:.2f} | {r.cpu_s:.2f} | {r.peak_rss_mib:.1f} | {r.work_s:.2f} |"
        )
    return "\n".join(lines)


def growth_table(entries: Sequence[dict[str, Any]]) -> str:
    intervals = list(entries[0]["slopes"]) if entries else []
    head = ["stage", "time", *[f"slope {i}" for i in intervals], "fitted slope", "verdict"]
    head += [f"s per 1M KB tokens {i}" for i in intervals] + ["fixed s (linear fit)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for e in entries:
        cells = [e["stage"], e["measure"], *[_num(e["slopes"][i]) for i in intervals]]
        cells += [_num(e["fit_slope"]), e["verdict"]]
        cells += [_num(e["marginal_s_per_mtok"][i]) for i in intervals] + [_num(e["fixed_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_tables(rows: Sequence[Row]) -> str:
    rag = [r for r in rows if r.stage == "rag"]
    ft = [r for r in rows if r.stage == "ft"]
    lines = [
        "| size | questions | K | chunks | data s | load encoder s | KB part s | search s "
        "| load model s | score s | recall@1 | acc |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rag:
        d = r.details
        d_t = d["retrieval_timings"]
        lines.append(
            f"| {r.size} | {d['questions']} | {d['k']} | {d['chunks']} | "
            f"{d['data_s']:.2f} | {d_t['load_encoder_s']:.2f} | {d['kb_part_s']:.2f} | "
            f"{d_t['search_s']:.3f} | "
            f"{d['load_model_s']:.2f} | {d['score_s']:.2f} | "
            f"{_num(d['recall_at_1'], 3)} | {d['acc']:.3f} |"
        )
    lines += [
        "",
        "| size | FT model | docs | blocks | steps | tokens trained | train s | tokens/s | "
        "loss first → last |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in ft:
        d = r.details
        lines.append(
            f"| {r.size} | {d['model']} | {r.docs} | {d['blocks']} | {d['steps']} | {r.tokens} "
            f"| {r.work_s:.2f} | {d['tokens_per_s']:.1f} | "
            f"{_num(d['loss_first'], 3)} → {_num(d['loss_last'], 3)} |"
        )
    return "\n".join(lines)


def verdict_lines(entries: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for stage in STAGES:
        mine = {e["measure"]: e for e in entries if e["stage"] == stage}
        work, cpu, wall = mine["kfr"], mine["CPU"], mine["wall"]
        line = (
            f"- {stage}: {work['verdict']} in KB tokens (kfr's own time, fitted slope "
            f"{_num(work['fit_slope'])}); process CPU {cpu['verdict']} (slope "
            f"{_num(cpu['fit_slope'])}); process wall {wall['verdict']} (slope "
            f"{_num(wall['fit_slope'])}, fixed part {_num(wall['fixed_s'], 1)} s)"
        )
        if "KB part" in mine:
            part = mine["KB part"]
            line += f"; its KB part {part['verdict']} (slope {_num(part['fit_slope'])})"
        lines.append(line)
    return lines


# ----------------------------------------------------------------------------- main


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

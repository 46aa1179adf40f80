"""The scaling benchmark's three stages, each a kfr command measured in its own process.

:func:`run_size` runs ``build`` (``kfr-index`` from an empty cache), ``rag`` (a ``method=rag``
cell on that index) and ``ft`` (one fine-tuning epoch) on the first ``size`` documents, each
measured by :func:`run_measured` (wall, CPU and peak RSS from ``os.wait4``), with the tokens
involved and kfr's own timing of the work (``benchmarks/scaling.py`` says which).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.scaling_people import People, write_knowledge
from kfr.data.schema import Document

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

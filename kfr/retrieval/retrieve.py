"""Top-K knowledge-base chunks per question, and recall against ``source_ids``.

``retrieve_passages`` is what a cell calls: it builds (or reuses) the cached index, embeds the
questions, searches, and returns a :class:`Retrieval` holding each question's chunks best first.
A Retrieval is never changed afterwards; fitting its passages into the language model's context
is prompt building's job (:mod:`kfr.evaluation.context`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kfr.core.errors import UserError
from kfr.core.schema import RetrieverConfig
from kfr.data.schema import Document, Question
from kfr.retrieval.chunking import Chunk
from kfr.retrieval.encoders import TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


@dataclass(frozen=True)
class Retrieval:
    """Each question's retrieved chunks (best first) and what to record about the search."""

    k: int
    hits: Mapping[str, Sequence[Hit]]
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passages(self) -> dict[str, list[str]]:
        return {qid: [hit.chunk.text for hit in hits] for qid, hits in self.hits.items()}

    def recall(self, questions: Sequence[Question]) -> dict[str, float | None]:
        """Fraction of questions with a ``source_ids`` document among their top-1 / top-K."""
        return {
            "recall_at_k": recall_at(self.hits, questions, self.k) if self.k else None,
            "recall_at_1": recall_at(self.hits, questions, 1) if self.k else None,
        }

    def record(self, question_id: str, used: int | None = None) -> dict[str, Any]:
        """The fields a question's line in predictions.jsonl gets; ``used``: how many of its
        chunks fitted into the prompt (all, when not given)."""
        hits = self.hits.get(question_id, [])
        return {
            "retrieved_ids": [hit.chunk.id for hit in hits],
            "retrieved_scores": [round(hit.score, 6) for hit in hits],
            "passages_used": len(hits) if used is None else used,
        }


def recall_at(hits: Mapping[str, Sequence[Hit]], questions: Sequence[Question], k: int):
    """Share of the questions with ``source_ids`` whose top-``k`` holds one of those documents."""
    judged = [q for q in questions if q.source_ids]
    if not judged:
        return None
    found = sum(
        any(hit.chunk.doc_id in q.source_ids for hit in hits.get(q.id, [])[:k]) for q in judged
    )
    return found / len(judged)


def query_text(question: Question, cfg: RetrieverConfig) -> str:
    text = question.question
    if cfg.query_with_choices:
        text = text + "\n" + "\n".join(question.choices)
    return cfg.query_prefix + text


# ----------------------------------------------------------------------------- retrieval


def search_hits(
    index, queries: np.ndarray, k: int, chunks: Sequence[Chunk], question_ids: Sequence[str]
) -> dict[str, list[Hit]]:
    """Each query's top-``k`` chunks, best first (what kfr adds to ``index.search``)."""
    from kfr.retrieval.faiss_index import search  # faiss: loaded only by cells that retrieve

    scores, ids = search(index, queries, k)
    return {
        qid: [Hit(chunks[i], s) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
        for qid, row_s, row_i in zip(question_ids, scores.tolist(), ids.tolist(), strict=True)
    }


def search_questions(
    encoder: TextEncoder,
    index,
    chunks: Sequence[Chunk],
    questions: Sequence[Question],
    cfg: RetrieverConfig,
) -> tuple[dict[str, list[Hit]], dict[str, float]]:
    started = time.perf_counter()
    queries = encoder.encode([query_text(q, cfg) for q in questions])
    encoded = time.perf_counter()
    hits = search_hits(index, queries, cfg.k, chunks, [q.id for q in questions])
    searched = time.perf_counter()
    timings = {
        "encode_queries_s": round(encoded - started, 3),
        "search_s": round(searched - encoded, 3),
        "queries_per_s": round(len(questions) / max(searched - encoded, 1e-9), 1),
    }
    return hits, timings


def retrieve_passages(
    cfg: RetrieverConfig,
    questions: Sequence[Question],
    documents: Sequence[Document] | None,
    cache_dir: str | Path,
    *,
    encoder: TextEncoder | None = None,
    progress: bool = True,
) -> Retrieval:
    """The top ``cfg.k`` chunks for every question, from the cached index of ``documents``; a
    knowledge base of fewer than ``cfg.k`` chunks is an error. An approximate index (IVF, HNSW)
    may still find fewer than ``k`` for a question: its record lists the chunks it got."""
    if cfg.k < 0:  # the schema's range; kept for RetrieverConfigs made in code
        raise UserError(f"must be 0 or more, got {cfg.k}", field="retriever.k")
    settings = {
        "retriever": cfg.name,
        "k": cfg.k,
        "index": cfg.index,
        "chunk_tokens": cfg.chunk_tokens,
        "chunk_overlap": cfg.chunk_overlap,
        "query_with_choices": cfg.query_with_choices,
    }
    if cfg.k == 0:
        # K=0 is the base method's prompts exactly: no index, no encoder needed.
        return Retrieval(0, {q.id: [] for q in questions}, {**settings, "index_dir": None})
    if not documents:
        raise UserError("empty knowledge base: nothing to retrieve from", field="data.knowledge")
    # faiss and sentence-transformers load here, not when a base cell imports this module.
    from kfr.retrieval.cache import ensure_index, read_chunks, read_index, read_index_manifest
    from kfr.retrieval.encoders import load_encoder, resolve_encoder_device
    from kfr.retrieval.faiss_index import (
        apply_search_params,
        choose_search_params,
        describe,
        faiss_gpus,
        to_gpus,
    )

    started = time.perf_counter()
    gpus = faiss_gpus(resolve_encoder_device(cfg.device), cfg.gpu_ids)
    encoder = encoder or load_encoder(cfg)
    loaded = time.perf_counter()
    files = ensure_index(documents, cfg, cache_dir, encoder, gpus=gpus, progress=progress)
    chunks = read_chunks(files)
    if cfg.k > len(chunks):
        # Every prompt would hold fewer chunks than the results say: stop before searching.
        raise UserError(
            f"{cfg.k} chunks asked for per question, but the knowledge base has only "
            f"{len(chunks)} chunks (of at most retriever.chunk_tokens={cfg.chunk_tokens} tokens)",
            field="retriever.k",
        )
    index = read_index(files, encoder.dim)
    manifest = read_index_manifest(files)
    # The breadth tuned at build (to retriever.target_recall) unless the user set one.
    params, sources = choose_search_params(
        index, cfg.nprobe, cfg.ef_search, manifest.get("search_params")
    )
    if "default" in sources.values():
        log.info(
            "Index %s has no tuned search breadth (built before tuning existed): using the "
            "fixed defaults %s",
            files.index_dir,
            {name: params[name] for name, source in sources.items() if source == "default"},
        )
    on_gpu = to_gpus(index, gpus) if gpus else None
    index = index if on_gpu is None else on_gpu
    apply_search_params(index, params, on_gpu=on_gpu is not None)
    faiss_device = describe(gpus if on_gpu is not None else [])
    ready = time.perf_counter()
    log.info(
        "Searching the top %d of %d chunks: %s index on %s %s",
        cfg.k,
        len(chunks),
        cfg.index,
        faiss_device,
        params,
    )
    hits, timings = search_questions(encoder, index, chunks, questions, cfg)
    info = {
        **settings,
        "search_params": params,
        "search_params_source": sources,  # per parameter: user | tuned | default
        # recall@10 vs exact search the tuned params reached when the index was built
        "tuned_recall_at_10": manifest.get("tuned_recall_at_10"),
        "chunks": len(chunks),
        "index_dir": str(files.index_dir),
        "index_reused": files.reused,
        "faiss_device": faiss_device,
        "encoder_device": str(getattr(encoder, "device", "cpu")),
        "timings": {
            "load_encoder_s": round(loaded - started, 3),
            "index_s": round(ready - loaded, 3),
            **timings,
        },
    }
    return Retrieval(cfg.k, hits, info)


def knowledge_chunks(
    cfg: RetrieverConfig,
    documents: Sequence[Document],
    cache_dir: str | Path,
    *,
    progress: bool = True,
) -> list[Chunk]:
    """Every chunk of the knowledge base as this retriever cuts and indexes it (RAFT trains on
    the very texts retrieval returns); the index is built if the cache lacks it."""
    from kfr.retrieval.cache import ensure_index, read_chunks  # faiss: see retrieve_passages
    from kfr.retrieval.encoders import load_encoder, resolve_encoder_device
    from kfr.retrieval.faiss_index import faiss_gpus

    gpus = faiss_gpus(resolve_encoder_device(cfg.device), cfg.gpu_ids)
    files = ensure_index(documents, cfg, cache_dir, load_encoder(cfg), gpus=gpus, progress=progress)
    return read_chunks(files)

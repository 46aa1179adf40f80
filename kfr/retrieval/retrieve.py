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
    # retriever.hops=2: per question, each hop's queries and top-K hits (empty for one hop)
    trace: Mapping[str, Sequence[tuple[Sequence[str], Sequence[Hit]]]] = field(default_factory=dict)

    @property
    def passages(self) -> dict[str, list[str]]:
        return {qid: [hit.chunk.text for hit in hits] for qid, hits in self.hits.items()}

    def recall(self, questions: Sequence[Question]) -> dict[str, float | None]:
        """Share of the questions with ``source_ids`` whose top-K / top-1 holds every one of
        those documents (:func:`recall_at`): recall@1 of a two-document question is 0."""
        return {
            "recall_at_k": recall_at(self.hits, questions, self.k) if self.k else None,
            "recall_at_1": recall_at(self.hits, questions, 1) if self.k else None,
        }

    def record(self, question_id: str, used: int | None = None) -> dict[str, Any]:
        """The fields a question's line in predictions.jsonl gets; ``used``: how many of its
        chunks fitted into the prompt (all, when not given)."""
        hits = self.hits.get(question_id, [])
        record: dict[str, Any] = {
            "retrieved_ids": [hit.chunk.id for hit in hits],
            "retrieved_scores": [round(hit.score, 6) for hit in hits],
            "passages_used": len(hits) if used is None else used,
        }
        if question_id in self.trace:  # retriever.hops=2: what each search found
            record["hops"] = [
                {
                    "queries": list(queries),
                    "retrieved_ids": [hit.chunk.id for hit in found],
                    "retrieved_scores": [round(hit.score, 6) for hit in found],
                }
                for queries, found in self.trace[question_id]
            ]
        return record


def recall_at(hits: Mapping[str, Sequence[Hit]], questions: Sequence[Question], k: int):
    """Share of the questions with ``source_ids`` whose top-``k`` chunks come from every one of
    those documents (all the documents the answer needs; one of them for a one-document
    question). A question needing more than ``k`` documents is never found at ``k``."""
    judged = [q for q in questions if q.source_ids]
    if not judged:
        return None
    found = 0
    for question in judged:
        documents = {hit.chunk.doc_id for hit in hits.get(question.id, [])[:k]}
        found += set(question.source_ids) <= documents
    return found / len(judged)


def query_text(question: Question, cfg: RetrieverConfig) -> str:
    return cfg.query_prefix + _asked(question, cfg)


def _asked(question: Question, cfg: RetrieverConfig) -> str:
    """What a question's query says, without the prefix."""
    text = question.question
    if cfg.query_with_choices:
        text = text + "\n" + "\n".join(question.choices)
    return text


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
) -> tuple[dict[str, list[Hit]], dict[str, float], dict[str, list]]:
    """Each question's top ``cfg.k`` hits, the timings, and (``cfg.hops`` 2) each hop's query
    and hits (:mod:`kfr.retrieval.hops`)."""
    started = time.perf_counter()
    texts = [query_text(q, cfg) for q in questions]
    queries = encoder.encode(texts)
    encoded = time.perf_counter()
    ids = [q.id for q in questions]
    hits = search_hits(index, queries, cfg.k, chunks, ids)
    searched = time.perf_counter()
    timings = {
        "encode_queries_s": round(encoded - started, 3),
        "search_s": round(searched - encoded, 3),
        "queries_per_s": round(len(questions) / max(searched - encoded, 1e-9), 1),
    }
    trace: dict[str, list] = {}
    if cfg.hops == 2 and questions:
        from kfr.retrieval.hops import merge_hops, pool_hits, second_queries

        owners, asked = [], []  # per second-hop query: its question's row, its text
        for row, question in enumerate(questions):
            if hits[question.id]:  # an approximate index may find nothing
                top = hits[question.id][0].chunk.text
                for text in second_queries(_asked(question, cfg), top):
                    owners.append(row)
                    asked.append(cfg.query_prefix + text)
        keys = [str(n) for n in range(len(asked))]
        found = search_hits(index, encoder.encode(asked), cfg.k, chunks, keys) if asked else {}
        by_row: dict[int, list[int]] = {}
        for n, row in enumerate(owners):
            by_row.setdefault(row, []).append(n)
        for row, numbers in by_row.items():
            first = hits[ids[row]]
            second = pool_hits([found[keys[n]] for n in numbers], first[0].chunk.id)
            trace[ids[row]] = [
                ([texts[row]], first),
                ([asked[n] for n in numbers], second[: cfg.k]),
            ]
            hits[ids[row]] = merge_hops(first, second, cfg.k)
        timings["second_hop_s"] = round(time.perf_counter() - searched, 3)
    return hits, timings, trace


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
    if cfg.hops not in (1, 2):  # likewise
        raise UserError(f"must be 1 or 2, got {cfg.hops}", field="retriever.hops")
    settings = {
        "retriever": cfg.name,
        "k": cfg.k,
        "index": cfg.index,
        "chunk_tokens": cfg.chunk_tokens,
        "chunk_overlap": cfg.chunk_overlap,
        "query_with_choices": cfg.query_with_choices,
        "hops": cfg.hops,
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
    hits, timings, trace = search_questions(encoder, index, chunks, questions, cfg)
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
    return Retrieval(cfg.k, hits, info, trace)


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

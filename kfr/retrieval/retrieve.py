"""Top-K knowledge-base chunks per question, recall against ``source_ids``, context fitting.

``retrieve_passages`` is what a cell calls: it builds (or reuses) the cached index, embeds the
questions, searches, and returns a :class:`Retrieval` holding each question's chunks best first.
``Retrieval.fit`` then turns them into scoring requests that fit the language model's context:
where context + prompt would be longer than ``max_length`` the lowest-ranked chunks are dropped
first; the question and its choices are never cut.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kfr.config import RetrieverConfig
from kfr.data.schema import Document, Question
from kfr.errors import UserError
from kfr.evaluation.loglikelihood import split_tokens
from kfr.evaluation.prompts import ChoiceRequest
from kfr.retrieval.chunking import Chunk
from kfr.retrieval.encoders import TextEncoder

log = logging.getLogger(__name__)

BuildRequests = Callable[..., list[ChoiceRequest]]  # build(passages=...) -> requests


@dataclass
class Hit:
    chunk: Chunk
    score: float


@dataclass
class Retrieval:
    """Each question's retrieved chunks (best first) and what to record about them."""

    k: int
    hits: dict[str, list[Hit]]
    info: dict[str, Any] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)  # question id -> chunks kept in context

    @property
    def passages(self) -> dict[str, list[str]]:
        return {qid: [hit.chunk.text for hit in hits] for qid, hits in self.hits.items()}

    def recall(self, questions: Sequence[Question]) -> dict[str, float | None]:
        """Fraction of questions with a ``source_ids`` document among their top-1 / top-K."""
        return {
            "recall_at_k": recall_at(self.hits, questions, self.k) if self.k else None,
            "recall_at_1": recall_at(self.hits, questions, 1) if self.k else None,
        }

    def fit(self, build: BuildRequests, tokenizer, max_length: int) -> list[ChoiceRequest]:
        """Requests whose contexts fit ``max_length``, dropping the lowest-ranked chunks first."""
        requests, kept, stats = fit_passages(build, self.passages, tokenizer, max_length)
        self.used = {qid: len(chunks) for qid, chunks in kept.items()}
        self.info["context"] = {"max_length": max_length, **stats}
        return requests

    def record(self, question_id: str) -> dict[str, Any]:
        """The fields a question's line in predictions.jsonl gets."""
        hits = self.hits.get(question_id, [])
        return {
            "retrieved_ids": [hit.chunk.id for hit in hits],
            "retrieved_scores": [round(hit.score, 6) for hit in hits],
            "passages_used": self.used.get(question_id, len(hits)),
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


# ----------------------------------------------------------------------------- context fitting


# Tokens that encoding context and choice together can differ by from encoding them apart (a
# merge across the boundary, moved spaces): far from the limit, the cheap count decides.
_BOUNDARY_SLACK = 8


def _too_long(request: ChoiceRequest, tokenizer, max_length: int) -> bool:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    longest = max(count(c) for c in request.continuations)
    if count(request.context) + longest + _BOUNDARY_SLACK <= max_length:
        return False
    # Near the limit: the scorer's own test (kfr.evaluation.loglikelihood), choice by choice.
    pairs = (split_tokens(tokenizer, request.context, c) for c in request.continuations)
    return any(len(ctx) + len(cont) - 1 > max_length for ctx, cont in pairs)


def fit_passages(
    build: BuildRequests,
    passages: Mapping[str, Sequence[str]],
    tokenizer,
    max_length: int,
) -> tuple[list[ChoiceRequest], dict[str, list[str]], dict[str, int]]:
    """Drop the lowest-ranked passages of questions whose prompt would not fit.

    ``build(passages=...)`` makes the requests of all questions (few-shot examples are chosen
    from the whole set, so requests are rebuilt together); only questions still too long are
    tokenized again after each round.
    """
    kept = {qid: list(texts) for qid, texts in passages.items()}
    requests = build(passages=kept)
    pending = [i for i, r in enumerate(requests) if kept.get(r.question_id)]
    affected: set[str] = set()
    dropped = 0
    while pending:
        pending = [i for i in pending if _too_long(requests[i], tokenizer, max_length)]
        for i in pending:
            qid = requests[i].question_id
            kept[qid].pop()
            affected.add(qid)
            dropped += 1
        if pending:
            requests = build(passages=kept)
            pending = [i for i in pending if kept[requests[i].question_id]]
    if affected:
        log.warning(
            "%d questions had their lowest-ranked chunks dropped (%d in all) to fit max_length=%d",
            len(affected),
            dropped,
            max_length,
        )
    stats = {"questions_with_dropped_chunks": len(affected), "dropped_chunks": dropped}
    return requests, kept, stats


# ----------------------------------------------------------------------------- retrieval


def search_hits(
    index, queries: np.ndarray, k: int, chunks: Sequence[Chunk], question_ids: Sequence[str]
) -> dict[str, list[Hit]]:
    """Each query's top-``k`` chunks, best first (what kfr adds to ``index.search``)."""
    from kfr.retrieval.faiss_index import search

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
    """The top ``cfg.k`` chunks for every question, from the cached index of ``documents``."""
    if cfg.k < 0:
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
    from kfr.retrieval.cache import ensure_index, read_chunks, read_index
    from kfr.retrieval.encoders import load_encoder, resolve_encoder_device
    from kfr.retrieval.faiss_index import (
        apply_search_params,
        describe,
        faiss_gpus,
        search_params,
        to_gpus,
    )

    started = time.perf_counter()
    gpus = faiss_gpus(resolve_encoder_device(cfg.device), cfg.gpu_ids)
    encoder = encoder or load_encoder(cfg)
    loaded = time.perf_counter()
    files = ensure_index(documents, cfg, cache_dir, encoder, gpus=gpus, progress=progress)
    chunks = read_chunks(files)
    index = read_index(files, encoder.dim)
    params = search_params(index, cfg.nprobe, cfg.ef_search)
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

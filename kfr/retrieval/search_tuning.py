"""Search breadth of a FAISS index, tuned from the corpus itself right after the build.

:func:`tune_search_params`: queries made near a seeded sample of the corpus's own vectors are
searched exactly and approximately, and the smallest breadth (``nprobe`` for IVF types,
``efSearch`` for HNSW) whose recall@10 against exact search reaches ``retriever.target_recall``
is kept (``cache`` stores it in the index directory's manifest; an explicit ``retriever.nprobe``
/ ``ef_search`` wins, :func:`kfr.retrieval.faiss_index.choose_search_params`).
:func:`tuning_key` is what a tuned choice depends on (part of the index directory's key).
``benchmarks/retrieval.py`` measures recall on held-out queries.

This recall is the index's against exact search, one query at a time: how many of the true
nearest chunks an approximate search returns. It is not the cell's recall@K of the documents a
question needs (:func:`kfr.retrieval.retrieve.recall_at`, every ``source_ids`` document in the top
K), and needs no change for questions of several documents: ``retriever.hops=2`` makes more
queries per question, each searched at the same tuned breadth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import faiss
import numpy as np

from kfr.core.errors import UserError
from kfr.retrieval.faiss_index import apply_search_params, is_hnsw, ivf_lists, search

log = logging.getLogger(__name__)

TUNE_K = 10  # tuning targets recall@10 against exact search
TUNE_QUERIES = 500  # corpus vectors sampled to make queries from (all of a smaller corpus)
TUNE_SEED = 0
# How far a tuning query lies from the corpus vector it is made from: cos(query, vector) =
# 1 - spread * (1 - cos(vector, its nearest other vector)), in a random direction. 0 would search
# the stored vectors themselves, which overrates HNSW: its search lands on the query's own node,
# whose links are its neighbours (20k clustered 64-d vectors: recall@10 0.97 at efSearch 11,
# where new vectors from the same clusters get 0.84 and need about 50). 0.5, half way to the
# nearest neighbour, asks about as much as the nearby queries of benchmarks/retrieval.py (in 64
# and 384 dimensions) and somewhat more than new vectors from the corpus's own distribution;
# questions are not chunks, and lie farther from them than chunks from each other.
TUNE_QUERY_SPREAD = 0.5
# Bump when tuning changes what it would choose: index directories are keyed by tuning_key().
TUNE_VERSION = 1
EXACT_BLOCK = 65_536  # corpus rows per block of the exact search (bounds the memory-map copy)
EF_SEARCH_CAP = 4096  # the widest efSearch tried (or the corpus size, when smaller)
# A found vector counts as a true neighbour when its exact score is at least the k-th exact
# score less this: duplicate chunks (equal scores) count whichever of them is returned, and the
# two ways of computing an inner product (BLAS, a gather) may differ in the last bits.
SCORE_TOLERANCE = 1e-5


def check_target_recall(target: float) -> None:
    # The schema's range; kept for RetrieverConfigs made in code.
    if not 0 < target <= 1:
        raise UserError(f"must be in (0, 1], got {target}", field="retriever.target_recall")


def tuned_parameter(index: faiss.Index) -> tuple[str, int, int] | None:
    """The search parameter tuning chooses for this index's type and the range it searches
    (smallest, largest), or None when there is nothing to tune (Flat, a plain PQ, ...)."""
    nlist = ivf_lists(index)
    if nlist is not None:
        return "nprobe", 1, nlist
    if is_hnsw(index):
        # FAISS searches max(efSearch, k) candidates; tuning asks for k+1 (its own row is dropped)
        low = TUNE_K + 1
        return "efSearch", low, max(low, min(EF_SEARCH_CAP, int(index.ntotal)))
    return None


def tuning_key(index: faiss.Index, target_recall: float) -> dict[str, object] | None:
    """What a tuned choice depends on besides the index itself (part of the index directory's
    key); None for an index type with nothing to tune. ``index`` may be empty (untrained)."""
    check_target_recall(target_recall)
    if ivf_lists(index) is None and not is_hnsw(index):
        return None
    return {
        "version": TUNE_VERSION,
        "target_recall": target_recall,
        "k": TUNE_K,
        "queries": TUNE_QUERIES,
        "seed": TUNE_SEED,
        "spread": TUNE_QUERY_SPREAD,
    }


@dataclass(frozen=True)
class SearchTuning:
    """The search breadth chosen for one index, and how well it did on the tuning sample."""

    params: dict[str, int]  # {} when there is nothing to tune
    recall_at_10: float | None  # at ``params`` on the tuning queries; None: nothing measured
    target_recall: float
    queries: int  # queries searched (made from this many corpus vectors)
    seconds: float
    tuned: bool  # False: the index type has no search breadth (Flat)

    @property
    def reached(self) -> bool:
        return self.recall_at_10 is None or self.recall_at_10 >= self.target_recall

    def manifest(self) -> dict[str, object]:
        """The index manifest's fields (only ``search_params`` for an index with none)."""
        if not self.tuned:
            return {"search_params": {}}
        recall = self.recall_at_10
        return {
            "search_params": dict(self.params),
            "tuned_recall_at_10": None if recall is None else round(recall, 4),
            "target_recall": self.target_recall,
            "tune_queries": self.queries,
            "tune_s": self.seconds,
        }


def exact_neighbours(
    embeddings: np.ndarray, queries: np.ndarray, k: int, block: int = EXACT_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (inner products, row ids) of ``queries`` over all rows of ``embeddings``,
    best first, equal scores by row id. A memory map is read ``block`` rows at a time."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.empty((len(queries), 0), dtype=np.float32)
    ids = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(embeddings), block):
        rows = np.ascontiguousarray(embeddings[start : start + block], dtype=np.float32)
        s, i = faiss.knn(queries, rows, min(k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT)
        scores, ids = np.hstack([scores, s]), np.hstack([ids, i + start])
        order = np.lexsort((ids, -scores))[:, :k]  # per row: score descending, then id
        scores = np.take_along_axis(scores, order, 1)
        ids = np.take_along_axis(ids, order, 1)
    return scores, ids


def _without_self(ids: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``k`` entries other than its own row id (and where they were)."""
    order = np.argsort(ids == own[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1), order


def tuning_queries(
    embeddings: np.ndarray, rows: np.ndarray, spread: float = TUNE_QUERY_SPREAD, seed: int = 0
) -> np.ndarray:
    """Unit queries near the corpus vectors ``rows``: each moved in a random direction until its
    cosine to the vector is 1 - ``spread`` * (1 - the vector's cosine to its nearest other one)
    (a duplicated vector stays where it is; ``spread`` 0: the vectors themselves)."""
    vectors = np.ascontiguousarray(embeddings[rows], dtype=np.float32)
    if spread == 0:
        return vectors
    scores, ids = exact_neighbours(embeddings, vectors, 2)
    _, where = _without_self(ids, rows, 1)
    nearest = np.clip(np.take_along_axis(scores, where, 1)[:, 0], -1.0, 1.0)
    cosine = (1.0 - spread * (1.0 - nearest))[:, None]
    direction = np.random.default_rng([seed, 1]).standard_normal(vectors.shape)
    direction -= np.sum(direction * vectors, axis=1, keepdims=True) * vectors
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    queries = cosine * vectors + np.sqrt(1.0 - cosine**2) * direction
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


class _RecallProbe:
    """recall@k of an index at a search breadth, on queries made from corpus rows
    (:func:`tuning_queries`): each query's own row is left out of both the exact and the
    approximate neighbours (the query is near it, so it would be found too easily)."""

    def __init__(
        self,
        index: faiss.Index,
        embeddings: np.ndarray,
        rows: np.ndarray,
        k: int,
        spread: float,
        seed: int,
    ):
        self.index, self.embeddings, self.rows, self.k = index, embeddings, rows, k
        self.queries = tuning_queries(embeddings, rows, spread, seed)
        scores, ids = exact_neighbours(embeddings, self.queries, k + 1)
        self.neighbours, where = _without_self(ids, rows, k)
        self.threshold = np.take_along_axis(scores, where, 1)[:, -1] - SCORE_TOLERANCE
        self.measured: dict[int, float] = {}

    def least_nprobe(self, target: float) -> int | None:
        """For a plain IVF index: the fewest lists whose probing covers ``target`` of the exact
        neighbours, from one coarse-quantizer pass (which list each neighbour was added to, and
        how near each list is to each query). Probing fewer lists cannot reach the target; with
        exact (Flat) lists exactly that many do, with PQ codes maybe not. None: not a plain IVF
        index (a pre-transform puts the quantizer in another space)."""
        ivf = faiss.downcast_index(self.index)
        if not isinstance(ivf, faiss.IndexIVF):
            return None
        nlist = int(ivf.nlist)
        flat = self.neighbours.ravel()
        vectors = np.ascontiguousarray(self.embeddings[np.sort(flat)], dtype=np.float32)
        assigned = ivf.quantizer.assign(vectors, 1).ravel()
        lists = assigned[np.searchsorted(np.sort(flat), flat)].reshape(self.neighbours.shape)
        _, order = ivf.quantizer.search(self.queries, nlist)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(nlist)[None, :].repeat(len(order), 0), 1)
        ranks = np.sort(np.take_along_axis(rank, lists, 1).ravel())
        needed = max(1, int(np.ceil(target * ranks.size - 1e-9)))
        return int(min(nlist, ranks[needed - 1] + 1))

    def __call__(self, name: str, value: int) -> float:
        """recall at ``name`` = ``value`` (remembered; the index is left set to it)."""
        if value not in self.measured:
            apply_search_params(self.index, {name: value}, on_gpu=False)
            self.measured[value] = self.measure()
        return self.measured[value]

    def measure(self) -> float:
        """recall at the index's current search parameters."""
        _, found = search(self.index, self.queries, self.k + 1)
        found, _ = _without_self(found, self.rows, self.k)
        valid = found >= 0
        if not valid.any():
            return 0.0
        # Exact scores of what was found (an IVF-PQ's own scores are approximate).
        unique = np.unique(found[valid])
        vectors = np.asarray(self.embeddings[unique], dtype=np.float32)
        position = np.searchsorted(unique, np.where(valid, found, unique[0]))
        true = np.einsum("qd,qkd->qk", self.queries, vectors[position])
        return float(np.count_nonzero(valid & (true >= self.threshold[:, None])) / found.size)


def _tuning_rows(n: int, queries: int, seed: int) -> np.ndarray:
    if n <= queries:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, queries, replace=False))


def sample_recall(
    index: faiss.Index,
    embeddings: np.ndarray,
    params: Mapping[str, int],
    *,
    queries: int = TUNE_QUERIES,
    seed: int = TUNE_SEED,
    spread: float = TUNE_QUERY_SPREAD,
) -> float:
    """recall@10 (at most n-1) of ``index`` searched with ``params`` (which it is left set to) on
    the queries :func:`tune_search_params` measures with the same arguments."""
    n = int(index.ntotal)
    k = min(TUNE_K, n - 1)
    if k < 1:
        raise ValueError(f"recall needs at least 2 vectors, the index holds {n}")
    probe = _RecallProbe(index, embeddings, _tuning_rows(n, queries, seed), k, spread, seed)
    apply_search_params(index, dict(params), on_gpu=False)
    return probe.measure()


def tune_search_params(
    index: faiss.Index,
    embeddings: np.ndarray,
    target_recall: float = 0.95,
    *,
    queries: int = TUNE_QUERIES,
    seed: int = TUNE_SEED,
    spread: float = TUNE_QUERY_SPREAD,
) -> SearchTuning:
    """The smallest search breadth of ``index`` (a CPU index over ``embeddings``, row i = id i)
    whose recall@10 against exact search reaches ``target_recall`` on queries made from the
    corpus's own vectors.

    ``queries`` corpus rows (seeded; all rows of a smaller corpus) become queries near them
    (:func:`tuning_queries`, ``spread``), searched exactly (by blocks: ``embeddings`` may be a
    memory map) and by the index; each query's own row is dropped from both lists (the query is
    next to it: counting it would inflate recall). A plain IVF index starts from the fewest
    lists that cover the target share of the exact neighbours (:meth:`_RecallProbe.least_nprobe`:
    fewer cannot reach it, and for IVF-Flat that many do: one search confirms it); otherwise the
    breadth starts from the smallest. It doubles until the target is reached, then bisects
    between the last miss and the first hit, so the choice is the smallest that reaches the
    target, recall being (nearly) monotone in it. When
    even the widest (nprobe = the lists, efSearch = :data:`EF_SEARCH_CAP`) falls short, the
    widest is kept with a warning. A corpus of k or fewer vectors is measured at recall@(n-1);
    one of a single vector keeps the widest. The index is left set to the choice.
    """
    check_target_recall(target_recall)
    started = time.perf_counter()
    parameter = tuned_parameter(index)
    if parameter is None:
        return SearchTuning({}, None, target_recall, 0, 0.0, tuned=False)
    name, low, high = parameter
    n = int(index.ntotal)
    if n != len(embeddings):
        raise ValueError(f"index holds {n} vectors, the embeddings {len(embeddings)}")
    k = min(TUNE_K, n - 1)
    if k < 1:  # nothing to measure: the widest search costs nothing here
        apply_search_params(index, {name: high}, on_gpu=False)
        seconds = round(time.perf_counter() - started, 3)
        return SearchTuning({name: high}, None, target_recall, 0, seconds, tuned=True)
    rows = _tuning_rows(n, queries, seed)
    probe = _RecallProbe(index, embeddings, rows, k, spread, seed)

    def reaches(value: int) -> bool:
        return probe(name, value) >= target_recall

    value, missed = low, low - 1
    if name == "nprobe":
        # Measuring a search per candidate costs minutes where the target needs most lists (a
        # diffuse 1M corpus: 20 min); the coverage bound gives the answer for IVF-Flat at once.
        least = probe.least_nprobe(target_recall)
        if least is not None:
            value, missed = least, least - 1
    while not reaches(value) and value < high:
        missed, value = value, min(high, 2 * value)
    if reaches(value):
        while value - missed > 1:  # missed fails (or is below the range), value reaches
            middle = (missed + value) // 2
            missed, value = (missed, middle) if reaches(middle) else (middle, value)
    recall = probe(name, value)
    apply_search_params(index, {name: value}, on_gpu=False)
    seconds = round(time.perf_counter() - started, 3)
    if recall < target_recall:
        log.warning(
            "FAISS index %s reaches recall@%d %.3f at most (%s=%d, the widest tried), below "
            "retriever.target_recall=%s; a finer index (more PQ codes, a larger HNSW M, Flat) "
            "would reach it",
            type(faiss.downcast_index(index)).__name__,
            k,
            recall,
            name,
            value,
            target_recall,
        )
    else:
        log.info(
            "Tuned %s=%d: recall@%d %.3f on %d queries near corpus vectors (target %s), %.1f s",
            name,
            value,
            k,
            recall,
            len(rows),
            target_recall,
            seconds,
        )
    return SearchTuning({name: value}, recall, target_recall, len(rows), seconds, tuned=True)

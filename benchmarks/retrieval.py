"""Retrieval at scale: encoder throughput, FAISS search at kfr's tuned defaults, kfr's overhead.

Two measurements, printed as Markdown tables:

- encode: the embedded MiniLM encoder (``retriever=minilm``) embedding synthetic chunks of about
  ``--chunk-tokens`` tokens into a memory-mapped file, as an index build does (chunks/s).
- search: for each size (``--sizes``, default 100k; add 1000000 for 1M, which takes many minutes
  on 2 cores) and each index (Flat, IVF{4 sqrt(N)},Flat, HNSW32; ``--indices`` adds e.g.
  ``IVF1024,PQ48``), in a child process of its own, exactly what a cell gets: the index built
  (``build_s``), its search breadth tuned (``kfr.retrieval.search_tuning.tune_search_params``, the
  call ``kfr.retrieval.cache`` makes after every build; ``tune_s``, the ``params`` it chose and
  the recall@10 they reached on its own queries made from corpus vectors, ``tuned_recall``),
  then searched at those params (kfr's defaults: ``retriever.nprobe`` / ``ef_search`` null):
  ``recall_at_10`` of held-out nearby queries against Flat (exact) on the same vectors,
  queries/s through kfr (``kfr.retrieval.retrieve.search_hits``: FAISS search plus turning ids
  into ranked chunks) and through ``index.search`` directly, and kfr's overhead.
  ``peak_rss_mb`` is the child's peak resident memory (``ru_maxrss``: interpreter, libraries,
  the vectors, chunk records, the index and its search); ``added_mb`` is that peak less the
  resident memory just before the build, i.e. the most that building, tuning and searching the
  index held on top of the data (the index itself, training and search buffers).

The vectors are random and normalised, of the embedder's dimension (384), drawn around N/100
random centres; the held-out queries are stored vectors moved in a random direction (cosine
about 0.7 to them), never the ones tuning uses: uniform random vectors have no neighbourhood
structure at all (every point is about equally far from every other), which no embedding model
produces and which makes any approximate index look arbitrarily bad. Timings are the best of
``--repeats`` runs; the 1-minute load average is printed, since other jobs share these cores.
Run from the repository root::

    .venv/bin/python -m benchmarks.retrieval [--sizes 100000 1000000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from kfr.retrieval.chunking import Chunk
from kfr.retrieval.faiss_index import apply_search_params, build_index, search_params
from kfr.retrieval.retrieve import search_hits
from kfr.retrieval.search_tuning import tune_search_params

DIM = 384  # all-MiniLM-L6-v2's embedding width
K = 10


@dataclass
class SearchRow:
    index: str
    vectors: int
    build_s: float  # train and add
    tune_s: float  # choosing the search breadth (tune_search_params)
    params: str  # the tuned search breadth: kfr's default for this index
    tuned_recall: float | str  # recall@10 tuning measured on its own queries at params
    recall_at_10: float  # held-out nearby queries at params, against Flat on the same vectors
    kfr_qps: float
    faiss_qps: float
    overhead_pct: float  # kfr time / faiss time - 1
    peak_rss_mb: float  # the child process's peak resident memory
    added_mb: float  # that peak less the resident memory just before the build


@dataclass
class EncodeRow:
    encoder: str
    chunks: int
    mean_tokens: float
    batch_size: int
    device: str
    chunks_per_s: float


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def clustered_vectors(n: int, seed: int = 0, block: int = 100_000) -> np.ndarray:
    """``n`` unit vectors around ``n/100`` random centres (cosine to the centre about 0.55)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, block):  # in blocks: 1M x 384 floats once, not three times
        stop = min(n, start + block)
        x = centres[rng.integers(0, len(centres), stop - start)]
        x += 0.08 * rng.standard_normal(x.shape, dtype=np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def nearby_queries(vectors: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = vectors[rng.integers(0, len(vectors), n)]
    q = q + 0.05 * rng.standard_normal(q.shape, dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def ivf_spec(n: int) -> str:
    lists = 2 ** round(math.log2(4 * math.sqrt(n)))  # the usual 4 sqrt(N), a power of two
    return f"IVF{lists},Flat"


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)]))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mb() -> float:
    """Resident memory now (Linux); elsewhere the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return _peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_index(
    spec: str, n: int, n_queries: int, exact: np.ndarray | None, repeats: int
) -> tuple[SearchRow, np.ndarray]:
    """One index over ``n`` vectors, as a cell builds, tunes and searches it (run in a child
    process of its own: the peak memory is this index's). ``exact``: Flat's answers (None: this
    is Flat, whose answers are returned for the others)."""
    vectors = clustered_vectors(n)
    queries = nearby_queries(vectors, n_queries)
    chunks = [Chunk(f"doc-{i}", 0, "", None, 0, 0) for i in range(n)]
    ids = [f"q{i}" for i in range(len(queries))]
    before = _rss_mb()
    started = time.perf_counter()
    index, _ = build_index(vectors, spec)
    build_s = time.perf_counter() - started
    tuning = tune_search_params(index, vectors)  # what kfr.retrieval.cache does after a build
    params = search_params(index, None, None, tuning.params)  # kfr's defaults
    apply_search_params(index, params, on_gpu=False)
    faiss_s = kfr_s = math.inf
    found = None
    for _ in range(repeats):  # interleaved, so a burst of load hits both alike
        t, (_, found) = _best(lambda: index.search(queries, K), 1)
        faiss_s = min(faiss_s, t)
        t, _ = _best(lambda: search_hits(index, queries, K, chunks, ids), 1)
        kfr_s = min(kfr_s, t)
    assert found is not None
    peak = _peak_rss_mb()
    row = SearchRow(
        index=spec,
        vectors=n,
        build_s=round(build_s, 2),
        tune_s=round(tuning.seconds, 2),
        params=", ".join(f"{k}={v}" for k, v in params.items()) or "-",
        tuned_recall="-" if tuning.recall_at_10 is None else round(tuning.recall_at_10, 4),
        recall_at_10=1.0 if exact is None else round(recall(found, exact), 4),
        kfr_qps=round(len(queries) / kfr_s, 1),
        faiss_qps=round(len(queries) / faiss_s, 1),
        overhead_pct=round(100 * (kfr_s / faiss_s - 1), 1),
        peak_rss_mb=round(peak),
        added_mb=round(peak - before),
    )
    return row, found


def bench_index_in_child(*args) -> tuple[SearchRow, np.ndarray]:
    """:func:`bench_index` in a fresh process (spawned: it inherits no memory of this one)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(bench_index, args)


def synthetic_chunks(n: int, words: int, seed: int = 0) -> list[str]:
    """Chunk-like texts: sentences of made-up words with common English glue words."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lor", "ven", "mi", "tas", "dra", "el", "on", "rus", "pe", "qui", "zan"]
    vocabulary = ["".join(rng.choice(syllables, size=rng.integers(2, 4))) for _ in range(5000)] + [
        "the",
        "of",
        "and",
        "in",
        "was",
        "a",
        "to",
        "for",
        "with",
        "by",
    ] * 100
    texts = []
    for _ in range(n):
        picked = rng.choice(vocabulary, size=words)
        sentences = [" ".join(picked[i : i + 12]).capitalize() + "." for i in range(0, words, 12)]
        texts.append(" ".join(sentences))
    return texts


def bench_encode(n_chunks: int, chunk_tokens: int, batch_size: int) -> EncodeRow:
    from hydra import compose, initialize_config_dir
    from transformers.utils import logging as hf_logging

    from kfr.core.paths import CONFIG_DIR
    from kfr.core.schema import typed_config
    from kfr.retrieval.encoders import encode_to_file, load_encoder

    hf_logging.disable_progress_bar()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose("config", overrides=[f"retriever.batch_size={batch_size}"])
        cfg = typed_config(composed).retriever
    encoder = load_encoder(cfg)
    # About chunk_tokens tokens per text, as chunking with retriever.chunk_tokens makes them.
    probe = synthetic_chunks(20, 100)
    per_word = np.mean(encoder.count_tokens(probe)) / 100
    texts = synthetic_chunks(n_chunks, max(1, int(chunk_tokens / per_word)))
    encoder.encode(texts[:batch_size])  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        seconds, _ = _best(
            lambda: encode_to_file(encoder, texts, Path(tmp) / "e.npy", progress=False), 1
        )
    return EncodeRow(
        encoder=cfg.name,
        chunks=n_chunks,
        mean_tokens=round(float(np.mean(encoder.count_tokens(texts[:200]))), 1),
        batch_size=batch_size,
        device=encoder.device,
        chunks_per_s=round(n_chunks / seconds, 1),
    )


def markdown(rows: Sequence[object]) -> str:
    fields = list(vars(rows[0]))
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(getattr(r, f)) for f in fields) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--indices", nargs="+", default=["Flat", "IVF", "HNSW32"], help="IVF = IVF{4 sqrt N},Flat"
    )
    parser.add_argument("--encode-chunks", type=int, default=2000, help="0 skips encoding")
    parser.add_argument("--chunk-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    if args.encode_chunks:
        print("\n## Encoding\n")
        print(markdown([bench_encode(args.encode_chunks, args.chunk_tokens, args.batch_size)]))
    rows = []
    for n in args.sizes:
        exact = None
        for name in ["Flat", *[s for s in args.indices if s != "Flat"]]:
            spec = ivf_spec(n) if name == "IVF" else name
            row, found = bench_index_in_child(spec, n, args.queries, exact, args.repeats)
            exact = found if spec == "Flat" else exact
            rows.append(row)
            print(f"  {spec} over {n}: {row}", flush=True)
    print(f"\n## Search (k={K}, {args.queries} queries, load average {os.getloadavg()[0]:.1f})\n")
    print(markdown(rows))
    # The roofline of exact search: 2 x queries x vectors x dim FLOPs, one matmul in blocks.
    # Approximate indices do less work by design, so only Flat has a share of peak. Imported
    # here: torch in the spawned children would add to their peak memory.
    import torch

    from benchmarks.roofline import matmul_peak

    torch.set_num_threads(faiss.omp_get_max_threads())
    peak = matmul_peak([(args.queries, DIM, 65_536)])
    print(f"\n{peak.describe()}")
    for row in rows:
        if row.index == "Flat":
            flops = 2 * args.queries * row.vectors * DIM
            share = peak.share(flops, args.queries / row.faiss_qps)
            print(f"Flat over {row.vectors}: {share:.0%} of the matmul peak (FAISS search)")


if __name__ == "__main__":
    main()

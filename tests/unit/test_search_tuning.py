"""Search breadth tuned per index from the corpus: the target recall, with no more breadth."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace

import faiss
import numpy as np
import pytest

from kfr.core.errors import UserError
from kfr.core.schema import RetrieverConfig
from kfr.data.schema import Document, Question
from kfr.retrieval.cache import ensure_index, read_index, read_index_manifest
from kfr.retrieval.faiss_index import (
    apply_search_params,
    build_index,
    choose_search_params,
    new_index,
    search,
    search_params,
)
from kfr.retrieval.retrieve import retrieve_passages
from kfr.retrieval.search_tuning import (
    TUNE_K,
    exact_neighbours,
    sample_recall,
    tune_search_params,
    tuned_parameter,
    tuning_key,
    tuning_queries,
)
from tests.unit.retrieval_fakes import HashingEncoder

DIM = 64
N = 10_000
TARGET = 0.95
TUNED = ["IVF128,Flat", "HNSW32"]


@pytest.fixture(autouse=True)
def one_faiss_thread():
    # 2 shared cores: OpenMP threads spinning against each other slow k-means down; one thread
    # also makes HNSW's graph (built in parallel otherwise) the same every time.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


CENTRES = _normalised(np.random.default_rng(0).standard_normal((N // 100, DIM)))


def around_centres(n: int, seed: int) -> np.ndarray:
    """Unit vectors around the random CENTRES, cosine to their centre about 0.55 (as
    benchmarks/retrieval.py's, in 64 dimensions)."""
    rng = np.random.default_rng(seed)
    noise = 1.5 / np.sqrt(DIM) * rng.standard_normal((n, DIM))
    return _normalised(CENTRES[rng.integers(0, len(CENTRES), n)] + noise)


def nearby_queries(vectors: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Stored vectors moved in a random direction to a cosine of about 0.8 with them."""
    rng = np.random.default_rng(seed)
    noise = 0.75 / np.sqrt(DIM) * rng.standard_normal((n, DIM))
    return _normalised(vectors[rng.integers(0, len(vectors), n)] + noise)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)])
    )


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return around_centres(N, seed=0)


@pytest.fixture(scope="module")
def tuned(vectors):
    """Each tuned index type, built and tuned once: spec -> (index, tuning)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        out = {}
        for spec in TUNED:
            index, _ = build_index(vectors, spec)
            out[spec] = (index, tune_search_params(index, vectors, TARGET))
        return out
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.mark.parametrize("spec", TUNED)
def test_the_tuned_breadth_reaches_the_target_on_held_out_queries(vectors, tuned, spec):
    index, tuning = tuned[spec]
    name = "nprobe" if spec.startswith("IVF") else "efSearch"
    assert set(tuning.params) == {name} and tuning.tuned and tuning.reached
    assert tuning.recall_at_10 >= TARGET and tuning.queries == 500 and tuning.seconds > 0
    # What a cell searches with when retriever.nprobe / ef_search are null.
    apply_search_params(index, search_params(index, None, None, tuning.params), on_gpu=False)
    # Queries tuning never saw: new vectors from the same clusters, and stored vectors moved.
    for queries in (around_centres(300, seed=5), nearby_queries(vectors, 300)):
        _, exact = exact_neighbours(vectors, queries, TUNE_K)
        _, found = search(index, queries, TUNE_K)
        assert _recall(found, exact) >= TARGET


@pytest.mark.parametrize("spec", TUNED)
def test_the_choice_is_the_smallest_breadth_that_reaches_the_target(vectors, tuned, spec):
    index, tuning = tuned[spec]
    ((name, value),) = tuning.params.items()
    _, low, high = tuned_parameter(index)
    assert low < value < high  # the data needs more than the narrowest and less than the widest
    assert sample_recall(index, vectors, {name: value}) == tuning.recall_at_10
    assert sample_recall(index, vectors, {name: value - 1}) < TARGET
    assert sample_recall(index, vectors, {name: value // 2}) < TARGET
    # A lower target never needs more.
    assert tune_search_params(index, vectors, 0.8).params[name] <= value


def test_tuning_is_deterministic(vectors, tuned):
    index, tuning = tuned["IVF128,Flat"]
    assert tune_search_params(index, vectors, TARGET).params == tuning.params
    rebuilt, _ = build_index(vectors, "IVF128,Flat")
    again = tune_search_params(rebuilt, vectors, TARGET)
    assert (again.params, again.recall_at_10) == (tuning.params, tuning.recall_at_10)


def test_exact_neighbours_by_blocks_equal_one_brute_force(vectors):
    queries = nearby_queries(vectors, 20)
    scores, ids = exact_neighbours(vectors, queries, 11, block=3000)  # blocks of uneven size
    similarities = queries @ vectors.T
    expected = np.argsort(-similarities, axis=1, kind="stable")[:, :11]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(similarities, expected, 1), atol=1e-5)


def test_tuning_queries_lie_half_way_to_the_nearest_neighbour(vectors):
    rows = np.array([3, 70, 900])
    corpus = np.concatenate([vectors[:1000], vectors[900:901]])  # row 1000 repeats row 900
    queries = tuning_queries(corpus, rows)
    similarities = corpus[rows] @ corpus.T
    similarities[np.arange(3), rows] = -1
    nearest = similarities.max(axis=1)
    cosine = np.sum(queries * corpus[rows], axis=1)
    np.testing.assert_allclose(cosine, 1 - 0.5 * (1 - nearest), atol=1e-5)
    assert nearest[2] == pytest.approx(1) and cosine[2] == pytest.approx(1)  # duplicated: stays
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(tuning_queries(corpus, rows, spread=0), corpus[rows])


def test_a_query_finding_itself_does_not_count(vectors):
    # Searched exhaustively, an IVF index finds exactly the exact neighbours: recall 1 with the
    # query's own row left out of both lists (not 10/11 or 11/10).
    index, _ = build_index(vectors[:3000], "IVF16,Flat")
    assert sample_recall(index, vectors[:3000], {"nprobe": 16}) == 1.0
    # Duplicated vectors (repeated chunks) score alike: whichever copy is found counts.
    doubled = np.concatenate([vectors[:1500], vectors[:1500]])
    index, _ = build_index(doubled, "IVF16,Flat")
    assert sample_recall(index, doubled, {"nprobe": 16}) == 1.0


def test_user_settings_win_over_the_tuned_ones():
    ivf, hnsw = new_index(DIM, "IVF64,Flat"), new_index(DIM, "HNSW32")
    tuned = {"nprobe": 37}
    assert choose_search_params(ivf, None, None, tuned) == ({"nprobe": 37}, {"nprobe": "tuned"})
    assert choose_search_params(ivf, 5, None, tuned) == ({"nprobe": 5}, {"nprobe": "user"})
    assert choose_search_params(ivf, 500, None, tuned) == ({"nprobe": 64}, {"nprobe": "user"})
    # An index without a tuned choice (built before tuning existed) gets the fixed defaults.
    assert choose_search_params(ivf, None, None, None) == ({"nprobe": 16}, {"nprobe": "default"})
    assert choose_search_params(hnsw, None, 99, {"efSearch": 40}) == (
        {"efSearch": 99},
        {"efSearch": "user"},
    )
    assert search_params(hnsw, None, None, {"efSearch": 40}) == {"efSearch": 40}
    assert choose_search_params(new_index(DIM, "Flat"), 5, 99, {}) == ({}, {})


def test_flat_has_nothing_to_tune(vectors):
    index, _ = build_index(vectors[:1000], "Flat")
    tuning = tune_search_params(index, vectors[:1000], TARGET)
    assert tuning.params == {} and not tuning.tuned and tuning.recall_at_10 is None
    assert tuning.manifest() == {"search_params": {}}
    assert tuning_key(index, TARGET) is None and tuned_parameter(index) is None


@pytest.mark.parametrize("n", [1, 2, 5, TUNE_K, TUNE_K + 1, 300])
@pytest.mark.parametrize("spec", ["IVF1,Flat", "HNSW32"])
def test_tiny_corpora_are_tuned_without_error(vectors, spec, n):
    index, _ = build_index(vectors[:n], spec)
    tuning = tune_search_params(index, vectors[:n], TARGET)
    (value,) = tuning.params.values()
    _, low, high = tuned_parameter(index)
    assert low <= value <= high and tuning.queries == (0 if n == 1 else n)
    if n == 1:  # no neighbour to measure: the widest search, which costs nothing here
        assert value == high and tuning.recall_at_10 is None and tuning.reached
    else:
        assert tuning.recall_at_10 >= TARGET


def test_an_unreachable_target_keeps_the_widest_breadth_with_a_warning(vectors, caplog):
    # 4 PQ codes of 64 dimensions cannot tell near neighbours apart, whatever the breadth.
    index, _ = build_index(vectors[:5000], "IVF16,PQ4")
    with caplog.at_level(logging.WARNING, logger="kfr.retrieval.search_tuning"):
        tuning = tune_search_params(index, vectors[:5000], TARGET)
    assert tuning.params == {"nprobe": 16} and not tuning.reached
    assert f"recall@10 {tuning.recall_at_10:.3f} at most" in caplog.text
    assert "retriever.target_recall=0.95" in caplog.text


@pytest.mark.parametrize("target", [0.0, 1.5, -1.0])
def test_a_target_recall_out_of_range_is_a_user_error(target):
    with pytest.raises(UserError, match=r"retriever\.target_recall"):
        tuning_key(new_index(DIM, "HNSW32"), target)


# ----------------------------------------------------------------------------- cache, retrieve

DOCUMENTS = [
    Document(f"doc-{i}", f"Entity {i} lives in town{i}. It was founded in {1900 + i}.", f"E{i}")
    for i in range(30)
]
QUESTIONS = [Question(f"q{i}", f"Where does entity {i} live?", ("a", "b"), 0) for i in range(5)]


def retriever(**overrides) -> RetrieverConfig:
    base = RetrieverConfig(
        name="test", chunk_tokens=8, chunk_overlap=0, index="IVF4,Flat", k=2, device="cpu"
    )
    return replace(base, **overrides)


def test_the_index_manifest_holds_the_choice_and_its_key_the_target(tmp_path):
    encoder = HashingEncoder()
    files = ensure_index(DOCUMENTS, retriever(), tmp_path, encoder, progress=False)
    manifest = read_index_manifest(files)
    nprobe = manifest["search_params"]["nprobe"]
    assert 1 <= nprobe <= 4 and manifest["tuned_recall_at_10"] >= TARGET
    assert manifest["target_recall"] == TARGET and manifest["tune_queries"] == files.n_chunks
    assert manifest["tune_s"] >= 0 and manifest["build_s"] >= 0
    assert faiss.extract_index_ivf(read_index(files, encoder.dim)).nprobe == nprobe
    # Another target is another index over the same embeddings.
    other = ensure_index(DOCUMENTS, retriever(target_recall=0.5), tmp_path, encoder)
    assert other.embeddings_dir == files.embeddings_dir and other.index_dir != files.index_dir
    assert other.built_index and not other.built_embeddings
    # Flat is not tuned: its directory keeps the spec-only name of caches written before.
    flat = ensure_index(DOCUMENTS, retriever(index="Flat"), tmp_path, encoder)
    spec_hash = hashlib.sha256(json.dumps("Flat").encode()).hexdigest()[:8]
    assert flat.index_dir.name == f"Flat-{spec_hash}"
    assert read_index_manifest(flat)["search_params"] == {}
    same = ensure_index(DOCUMENTS, retriever(index="Flat", target_recall=0.5), tmp_path, encoder)
    assert same.index_dir == flat.index_dir and same.reused


def test_retrieve_uses_the_tuned_breadth_unless_the_user_sets_one(tmp_path):
    encoder = HashingEncoder()
    found = retrieve_passages(retriever(), QUESTIONS, DOCUMENTS, tmp_path, encoder=encoder)
    tuned = read_index_manifest(ensure_index(DOCUMENTS, retriever(), tmp_path, encoder))
    info = found.info
    assert info["search_params"] == tuned["search_params"]
    assert info["search_params_source"] == {"nprobe": "tuned"}
    assert info["tuned_recall_at_10"] == tuned["tuned_recall_at_10"]
    mine = retrieve_passages(retriever(nprobe=3), QUESTIONS, DOCUMENTS, tmp_path, encoder=encoder)
    assert mine.info["search_params"] == {"nprobe": 3} and mine.info["index_reused"]
    assert mine.info["search_params_source"] == {"nprobe": "user"}
    flat = retrieve_passages(
        retriever(index="Flat"), QUESTIONS, DOCUMENTS, tmp_path, encoder=encoder
    )
    assert flat.info["search_params"] == {} and flat.info["search_params_source"] == {}
    assert flat.info["tuned_recall_at_10"] is None


def test_an_index_built_before_tuning_gets_the_fixed_defaults(tmp_path, caplog, monkeypatch):
    from kfr.retrieval import cache

    encoder = HashingEncoder()
    read = cache.read_index_manifest

    def as_an_older_kfr_wrote_it(files):
        manifest = read(files)
        for key in ("search_params", "tuned_recall_at_10", "target_recall", "tune_queries"):
            del manifest[key]
        return manifest

    # (Editing the file itself would only get the cache entry rebuilt as damaged.)
    monkeypatch.setattr(cache, "read_index_manifest", as_an_older_kfr_wrote_it)
    with caplog.at_level(logging.INFO, logger="kfr.retrieval.retrieve"):
        found = retrieve_passages(
            retriever(index="HNSW32"), QUESTIONS, DOCUMENTS, tmp_path, encoder=encoder
        )
    assert found.info["search_params"] == {"efSearch": 128}
    assert found.info["search_params_source"] == {"efSearch": "default"}
    assert found.info["tuned_recall_at_10"] is None
    assert "no tuned search breadth" in caplog.text

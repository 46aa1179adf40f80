"""FAISS indices on the CPU: exact search is brute force, approximate ones keep their recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kfr.core.errors import UserError
from kfr.retrieval import faiss_index
from kfr.retrieval.faiss_index import (
    apply_search_params,
    build_index,
    default_nprobe,
    faiss_gpus,
    new_index,
    search,
    search_params,
)

DIM = 32


@pytest.fixture(autouse=True)
def one_faiss_thread():
    # The test machines have 2 cores shared with other jobs: OpenMP threads spinning against
    # each other make k-means several times slower than one thread.
    threads = faiss_index.faiss.omp_get_max_threads()
    faiss_index.faiss.omp_set_num_threads(1)
    yield
    faiss_index.faiss.omp_set_num_threads(threads)


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """Vectors around 100 random centres, and queries near some of them: embedding-like data."""
    rng = np.random.default_rng(0)
    centres = _normalised(rng.standard_normal((100, DIM)))
    vectors = _normalised(
        centres[rng.integers(0, 100, 6000)] + 0.15 * rng.standard_normal((6000, DIM))
    )
    queries = _normalised(
        vectors[rng.integers(0, 6000, 200)] + 0.2 * rng.standard_normal((200, DIM))
    )
    return vectors, queries


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)])
    )


def test_flat_search_equals_numpy_brute_force(clustered):
    vectors, queries = clustered
    index, report = build_index(vectors, "Flat")
    assert report.device == "cpu" and not report.trained
    scores, ids = search(index, queries, 10)
    similarities = queries @ vectors.T
    expected = np.argsort(-similarities, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(similarities, expected, 1), atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "floor"),
    [("IVF64,Flat", 0.95), ("HNSW32", 0.95), ("IVF64,PQ8", 0.4)],
)
def test_approximate_indices_keep_recall_with_default_search_params(clustered, spec, floor):
    vectors, queries = clustered
    _, exact = search(build_index(vectors, "Flat")[0], queries, 10)
    index, report = build_index(vectors, spec)
    assert report.trained == ("IVF" in spec)
    apply_search_params(index, search_params(index, None, None), on_gpu=False)
    _, found = search(index, queries, 10)
    assert _recall(found, exact) >= floor


def test_embeddings_can_be_a_memory_map(tmp_path, clustered):
    vectors = clustered[0]
    np.save(tmp_path / "e.npy", vectors)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    index, _ = build_index(mapped, "IVF16,Flat")
    assert index.ntotal == len(vectors)


def test_search_params_follow_the_index_type():
    assert search_params(new_index(DIM, "Flat"), None, None) == {}
    hnsw = new_index(DIM, "HNSW32")
    assert search_params(hnsw, None, 77) == {"efSearch": 77}
    assert search_params(hnsw, None, None) == {"efSearch": 128}
    ivf = new_index(DIM, "IVF1024,Flat")
    assert search_params(ivf, None, None) == {"nprobe": default_nprobe(1024)} == {"nprobe": 64}
    assert search_params(ivf, 5000, None) == {"nprobe": 1024}  # never more than the lists
    assert default_nprobe(8) == 8 and default_nprobe(100) == 16
    with pytest.raises(UserError, match=r"retriever\.nprobe"):
        search_params(ivf, 0, None)


def test_k_larger_than_the_index_pads_with_minus_one(clustered):
    index, _ = build_index(clustered[0][:5], "Flat")
    _, ids = search(index, clustered[1][:2], 8)
    assert (ids[:, :5] >= 0).all() and (ids[:, 5:] == -1).all()


@pytest.mark.parametrize("spec", ["IVFxx", "PQ7", "Nonsense"])
def test_a_spec_faiss_rejects_is_a_user_error_naming_the_key(spec):
    with pytest.raises(UserError, match=r"retriever\.index") as info:
        new_index(DIM, spec)
    assert "Error in" not in str(info.value)  # FAISS's C++ location is left out


def test_too_few_vectors_to_train_is_a_user_error(clustered):
    with pytest.raises(UserError, match=r"retriever\.index.*fewer IVF lists"):
        build_index(clustered[0][:20], "IVF64,Flat")


def test_cpu_device_or_faiss_without_gpus_builds_on_the_cpu(monkeypatch):
    assert faiss_gpus(torch.device("cpu"), None) == []
    monkeypatch.setattr(faiss_index.faiss, "get_num_gpus", lambda: 0)
    assert faiss_gpus(torch.device("cuda"), [0]) == []
    monkeypatch.setattr(faiss_index.faiss, "get_num_gpus", lambda: 2)
    assert faiss_gpus(torch.device("cuda"), None) == [0, 1]
    assert faiss_gpus(torch.device("cuda:1"), None) == [1]
    with pytest.raises(UserError, match=r"retriever\.gpu_ids"):
        faiss_gpus(torch.device("cuda"), [3])


def _faiss_gpu_available() -> bool:
    return torch.cuda.is_available() and faiss_index.faiss.get_num_gpus() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _faiss_gpu_available(), reason="needs CUDA and GPU FAISS (faiss-gpu)")
@pytest.mark.parametrize("spec", ["Flat", "IVF64,Flat", "IVF64,PQ8", "HNSW32"])
def test_gpu_build_saves_a_cpu_index_with_the_same_answers(clustered, spec, tmp_path):
    vectors, queries = clustered
    gpu_built, gpu_report = build_index(vectors, spec, gpus=[0])
    assert gpu_report.device == ("cpu" if spec == "HNSW32" else "gpu:0")  # no GPU HNSW
    faiss_index.faiss.write_index(gpu_built, str(tmp_path / "i.faiss"))  # a CPU index
    loaded = faiss_index.faiss.read_index(str(tmp_path / "i.faiss"))
    params = search_params(loaded, None, None)
    apply_search_params(loaded, params, on_gpu=False)
    on_gpu = faiss_index.to_gpus(loaded, [0])
    if on_gpu is not None:
        apply_search_params(on_gpu, params, on_gpu=True)
    _, exact = search(build_index(vectors, "Flat")[0], queries, 10)
    _, found = search(on_gpu if on_gpu is not None else loaded, queries, 10)
    assert _recall(found, exact) >= (0.4 if "PQ" in spec else 0.95)

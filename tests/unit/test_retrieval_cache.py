"""Index cache: built once, reused, rebuilt when what it depends on changes, never half-written."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest
from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.core.schema import RetrieverConfig
from kfr.core.storage import READY_MARKER
from kfr.data.schema import Document
from kfr.retrieval.cache import (
    CHUNKS_FILE,
    EMBEDDINGS_FILE,
    INDEX_FILE,
    ensure_index,
    read_chunks,
    read_index,
)
from tests.unit.retrieval_fakes import HashingEncoder

DOCUMENTS = [
    Document(f"doc-{i}", f"Entity {i} lives in town{i}. It was founded in {1900 + i}.", f"E{i}")
    for i in range(30)
]


def retriever(**overrides) -> RetrieverConfig:
    base = RetrieverConfig(name="test", chunk_tokens=8, chunk_overlap=0, index="Flat", k=2)
    return replace(base, **overrides)


def complete_dirs(cache: Path) -> list[Path]:
    return sorted(p.parent for p in (cache / "indices").rglob(READY_MARKER))


def test_build_then_reuse_without_encoding_again(tmp_path):
    encoder = HashingEncoder()
    first = ensure_index(DOCUMENTS, retriever(), tmp_path, encoder, progress=False)
    assert not first.reused and first.n_chunks == 60 and first.dim == encoder.dim
    encoded = encoder.encoded_texts
    assert encoded == 60
    chunks = read_chunks(first)
    assert [c.id for c in chunks[:2]] == ["doc-0#0", "doc-0#1"]
    embeddings = np.load(first.embeddings_dir / EMBEDDINGS_FILE)
    assert embeddings.dtype == np.float32 and embeddings.shape == (60, encoder.dim)
    np.testing.assert_allclose(embeddings[5], encoder.encode([chunks[5].text])[0], atol=1e-6)

    again = ensure_index(DOCUMENTS, retriever(), tmp_path, encoder, progress=False)
    assert again.reused and again.index_dir == first.index_dir
    assert encoder.encoded_texts == encoded + 1  # only the check above; no re-embedding
    assert read_index(again, encoder.dim).ntotal == 60


def test_changed_corpus_or_chunking_gets_a_new_key_and_a_new_index_spec_reuses_embeddings(
    tmp_path,
):
    encoder = HashingEncoder()
    base = ensure_index(DOCUMENTS, retriever(), tmp_path, encoder, progress=False)
    edited = [*DOCUMENTS[:-1], replace(DOCUMENTS[-1], text="Entity 29 moved away.")]
    changed = ensure_index(edited, retriever(), tmp_path, encoder, progress=False)
    assert changed.embeddings_dir != base.embeddings_dir and changed.built_embeddings
    rechunked = ensure_index(DOCUMENTS, retriever(chunk_tokens=20), tmp_path, encoder)
    assert rechunked.embeddings_dir not in {base.embeddings_dir, changed.embeddings_dir}
    other_encoder = ensure_index(DOCUMENTS, retriever(), tmp_path, HashingEncoder(identity="x"))
    assert other_encoder.embeddings_dir != base.embeddings_dir

    before = encoder.encoded_texts
    hnsw = ensure_index(DOCUMENTS, retriever(index="HNSW32"), tmp_path, encoder)
    assert hnsw.embeddings_dir == base.embeddings_dir and hnsw.index_dir != base.index_dir
    assert hnsw.built_index and not hnsw.built_embeddings
    assert encoder.encoded_texts == before  # the embeddings were reused for the new index


def _build_in_child(cache: str, log_file: str) -> str:
    encoder = HashingEncoder(log_file=log_file, delay_s=1.0)
    return str(ensure_index(DOCUMENTS, retriever(), cache, encoder, progress=False).index_dir)


def test_concurrent_builders_build_once(tmp_path):
    log_file = tmp_path / "encode-calls.txt"
    # spawn: a fresh interpreter per builder, as separate jobs of a sweep are.
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        dirs = pool.starmap(_build_in_child, [(str(tmp_path), str(log_file))] * 2)
    assert dirs[0] == dirs[1]
    calls = log_file.read_text().splitlines()
    assert len(calls) == 1, calls  # one process embedded; the other waited and reused
    assert len(complete_dirs(tmp_path)) == 2  # the embeddings dir and its one index dir


class _FailingEncoder(HashingEncoder):
    def encode(self, texts):
        raise RuntimeError("encoder crashed")


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path):
    with pytest.raises(RuntimeError, match="crashed"):
        ensure_index(DOCUMENTS, retriever(), tmp_path, _FailingEncoder(), progress=False)
    indices = tmp_path / "indices"
    assert [p.name for p in indices.iterdir() if not p.name.endswith(".lock")] == []


def test_a_bad_index_spec_fails_before_anything_is_embedded(tmp_path):
    encoder = HashingEncoder()
    with pytest.raises(UserError, match=r"retriever\.index"):
        ensure_index(DOCUMENTS, retriever(index="IVFbogus"), tmp_path, encoder)
    assert encoder.encoded_texts == 0
    assert not (tmp_path / "indices").exists() or complete_dirs(tmp_path) == []


def test_an_index_that_cannot_be_trained_leaves_only_the_embeddings(tmp_path):
    with pytest.raises(UserError, match=r"retriever\.index.*60 chunks"):
        ensure_index(DOCUMENTS, retriever(index="IVF256,Flat"), tmp_path, HashingEncoder())
    built = complete_dirs(tmp_path)
    assert len(built) == 1 and (built[0] / CHUNKS_FILE).is_file()  # embeddings are valid
    assert not list(built[0].glob(f"*/{INDEX_FILE}"))


def test_an_index_of_another_dimension_is_a_user_error(tmp_path):
    encoder = HashingEncoder(dim=64)
    files = ensure_index(DOCUMENTS, retriever(), tmp_path, encoder)
    with pytest.raises(UserError, match="64-d vectors but the encoder gives 32-d"):
        read_index(files, 32)
    # A cached index replaced by one of another width (another encoder's) is caught on load.
    faiss.write_index(faiss.IndexFlatIP(16), str(files.index_path))
    with pytest.raises(UserError, match="16-d vectors but the encoder gives 64-d"):
        read_index(files, 64)


def test_empty_knowledge_base_and_chunks_too_long_for_the_encoder(tmp_path):
    with pytest.raises(UserError, match="empty knowledge base"):
        ensure_index([], retriever(), tmp_path, HashingEncoder())
    encoder = HashingEncoder()
    encoder.max_seq_length = 10
    with pytest.raises(UserError, match=r"retriever\.chunk_tokens.*max_seq_length 10"):
        ensure_index(DOCUMENTS, retriever(chunk_tokens=16), tmp_path, encoder)


def test_the_retriever_config_is_plain_data_for_hydra():
    cfg = OmegaConf.structured(RetrieverConfig(name="x"))
    assert cfg.k == 3 and cfg.index == "Flat" and cfg.gpu_ids is None

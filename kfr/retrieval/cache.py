"""Chunks, embeddings and FAISS indices cached on disk, built once per sweep.

Layout under ``${paths.cache_dir}/indices/``::

    <encoder>-<key>/                 key: corpus content, encoder identity, passage prefix,
        chunks.jsonl                      chunking settings
        embeddings.npy               float32, row i = chunk i (line i of chunks.jsonl)
        manifest.json
        <spec>-<hash>/               one directory per index spec over those embeddings (and,
            index.faiss              for IVF / HNSW, the search-breadth tuning settings:
            manifest.json            retriever.target_recall); a CPU index (built on a GPU when
                                     there is one); the manifest holds its tuned search_params

Embedding is the expensive step, so it is keyed without the index spec: trying another index
reuses the embeddings. An IVF or HNSW index's search breadth (nprobe, efSearch) is tuned
right after it is built (``search_tuning.tune_search_params``, to ``retriever.target_recall``)
and stored in its manifest (``read_index_manifest``). Each directory is built by
``kfr.core.storage.build_directory_once``: the jobs of a sweep wait on a file lock and the first
one builds; a directory appears only complete (renamed from a temporary one), so a crash or a bad
setting never leaves a half-written index. Anything that changes what is built (a document, the
encoder, a setting) changes the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from kfr.core import faults
from kfr.core.errors import UserError
from kfr.core.schema import RetrieverConfig
from kfr.core.storage import atomic_write_json, build_directory_once
from kfr.data.schema import Document
from kfr.retrieval.chunking import Chunk, check_chunk_settings, chunk_corpus
from kfr.retrieval.encoders import TextEncoder, encode_to_file
from kfr.retrieval.faiss_index import build_index, new_index
from kfr.retrieval.search_tuning import tune_search_params, tuning_key

log = logging.getLogger(__name__)

KEY_VERSION = 1  # bump when the layout or the chunking algorithm changes
CHUNKS_FILE = "chunks.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"


def corpus_hash(documents: Sequence[Document]) -> str:
    """Content hash of what chunking reads: ids, titles and texts, in order."""
    digest = hashlib.sha256()
    for document in documents:
        record = [document.id, document.title, document.text]
        digest.update(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def _short_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def embeddings_key(documents: Sequence[Document], cfg: RetrieverConfig, encoder: TextEncoder):
    """What the chunks and their embeddings depend on (not search-time settings, not K)."""
    return {
        "version": KEY_VERSION,
        "corpus": corpus_hash(documents),
        "encoder": encoder.identity,
        "passage_prefix": cfg.passage_prefix,
        "chunk_tokens": cfg.chunk_tokens,
        "chunk_overlap": cfg.chunk_overlap,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "index"


@dataclass
class IndexFiles:
    """Where one cached index lives, and whether this call had to build any of it."""

    embeddings_dir: Path
    index_dir: Path
    built_embeddings: bool
    built_index: bool
    n_chunks: int
    dim: int

    @property
    def reused(self) -> bool:
        return not (self.built_embeddings or self.built_index)

    @property
    def index_path(self) -> Path:
        return self.index_dir / INDEX_FILE


def _check_chunk_fit(cfg: RetrieverConfig, encoder: TextEncoder) -> None:
    """A chunk plus the passage prefix must fit the encoder, or its end would be cut silently."""
    limit = getattr(encoder, "max_seq_length", None)
    if limit is None:
        return
    specials = encoder.special_tokens() if hasattr(encoder, "special_tokens") else 0
    prefix = encoder.count_tokens([cfg.passage_prefix])[0] if cfg.passage_prefix else 0
    if cfg.chunk_tokens + prefix + specials > limit:
        raise UserError(
            f"{cfg.chunk_tokens} tokens per chunk (+{prefix} prefix, +{specials} special) do not "
            f"fit the encoder's max_seq_length {limit}; lower retriever.chunk_tokens to "
            f"{limit - prefix - specials} or less",
            field="retriever.chunk_tokens",
        )


def ensure_index(
    documents: Sequence[Document],
    cfg: RetrieverConfig,
    cache_dir: str | Path,
    encoder: TextEncoder,
    *,
    gpus: Sequence[int] = (),
    progress: bool = True,
) -> IndexFiles:
    """Chunk, embed and index ``documents`` unless the cache has them; return where they are."""
    if not documents:
        raise UserError("empty knowledge base: nothing to retrieve from", field="data.knowledge")
    check_chunk_settings(cfg.chunk_tokens, cfg.chunk_overlap)
    _check_chunk_fit(cfg, encoder)
    # A bad spec (or target recall) fails now, before anything is embedded.
    tuning = tuning_key(new_index(encoder.dim, cfg.index), cfg.target_recall)
    key = embeddings_key(documents, cfg, encoder)
    embeddings_dir = Path(cache_dir) / "indices" / f"{_slug(cfg.name)}-{_short_hash(key)}"
    built = {"embeddings": False, "index": False}

    def embed(tmp: Path) -> None:
        started = time.perf_counter()
        chunks = chunk_corpus(
            documents,
            encoder.count_tokens,
            chunk_tokens=cfg.chunk_tokens,
            chunk_overlap=cfg.chunk_overlap,
        )
        log.info("Embedding %d chunks of %d documents (once)", len(chunks), len(documents))
        with (tmp / CHUNKS_FILE).open("w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(json.dumps(chunk.to_json(), ensure_ascii=False) + "\n")
        faults.point("index.embed")
        texts = [cfg.passage_prefix + chunk.text for chunk in chunks]
        embeddings = encode_to_file(encoder, texts, tmp / EMBEDDINGS_FILE, progress=progress)
        del embeddings  # closes the memory map before the directory is renamed
        manifest = {
            **key,
            "documents": len(documents),
            "chunks": len(chunks),
            "dim": encoder.dim,
            "embed_s": round(time.perf_counter() - started, 3),
        }
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
        built["embeddings"] = True

    build_directory_once(embeddings_dir, embed)
    manifest = json.loads((embeddings_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    _check_dim(manifest["dim"], encoder.dim, embeddings_dir)

    # A tuned index is keyed by its tuning settings too (rebuilt when they change, and index
    # directories written before tuning existed are not reused); Flat keeps the spec alone.
    index_key = cfg.index if tuning is None else {"spec": cfg.index, "search_tuning": tuning}
    index_dir = embeddings_dir / f"{_slug(cfg.index)}-{_short_hash(index_key)[:8]}"

    def index(tmp: Path) -> None:
        started = time.perf_counter()
        embeddings = np.load(embeddings_dir / EMBEDDINGS_FILE, mmap_mode="r")
        built_index, report = build_index(embeddings, cfg.index, gpus)
        built_s = time.perf_counter() - started
        # Tuned on the CPU index build_index returns (after a GPU build too), which is left set
        # to the choice: index.faiss holds it as well.
        tuned = tune_search_params(built_index, embeddings, cfg.target_recall)
        del embeddings
        faiss.write_index(built_index, str(tmp / INDEX_FILE))
        faults.point("index.build")
        atomic_write_json(
            tmp / MANIFEST_FILE,
            {
                "spec": cfg.index,
                "dim": int(built_index.d),
                "vectors": int(built_index.ntotal),
                "built_on": report.device,
                "train_vectors": report.train_vectors,
                "build_s": round(built_s, 3),
                **tuned.manifest(),
            },
        )
        built["index"] = True

    build_directory_once(index_dir, index)
    files = IndexFiles(
        embeddings_dir,
        index_dir,
        built["embeddings"],
        built["index"],
        manifest["chunks"],
        manifest["dim"],
    )
    if files.reused:
        log.info("Reused cached index %s (%d chunks)", index_dir, files.n_chunks)
    else:
        log.info("Built index %s (%d chunks)", index_dir, files.n_chunks)
    return files


def _check_dim(found: int, expected: int, where: Path) -> None:
    if found != expected:
        raise UserError(
            f"cached index has {found}-d vectors but the encoder gives {expected}-d: it was "
            f"built with another encoder; delete {where} to rebuild it",
            path=where,
            field="retriever",
        )


def read_chunks(files: IndexFiles) -> list[Chunk]:
    with (files.embeddings_dir / CHUNKS_FILE).open(encoding="utf-8") as f:
        return [Chunk.from_json(json.loads(line)) for line in f]


def read_index_manifest(files: IndexFiles) -> dict:
    """The index directory's manifest: spec, sizes, build time and the tuned search breadth
    (``search_params``; absent in a manifest written before tuning existed)."""
    return json.loads((files.index_dir / MANIFEST_FILE).read_text(encoding="utf-8"))


def read_index(files: IndexFiles, dim: int) -> faiss.Index:
    """The cached CPU index; its dimension must be the encoder's."""
    index = faiss.read_index(str(files.index_path))
    _check_dim(int(index.d), dim, files.index_dir)
    if index.ntotal != files.n_chunks:
        raise UserError(
            f"cached index holds {index.ntotal} vectors for {files.n_chunks} chunks; delete "
            f"{files.index_dir} to rebuild it",
            path=files.index_dir,
            field="retriever",
        )
    return index

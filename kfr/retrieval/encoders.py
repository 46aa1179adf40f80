"""Sentence-transformers encoders: load one from a retriever config, embed queries and chunks.

Embeddings are L2-normalised float32, so FAISS inner product is cosine similarity. On a GPU the
encoder runs in float16 (``retriever.fp16``); the embeddings are float32 all the same. A corpus
is embedded into a memory-mapped ``.npy`` file a block at a time: a million chunks never sit in
memory twice, and texts are encoded longest first so a batch pads little.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from kfr.core.devices import resolve_device
from kfr.core.errors import UserError
from kfr.core.packages import find_package_file, package_version
from kfr.core.schema import EncoderSource, RetrieverConfig

log = logging.getLogger(__name__)

# Texts handed to the encoder per call when filling the embeddings file: bounds memory, and the
# progress bar moves at this step.
ENCODE_BLOCK = 4096


class TextEncoder(Protocol):
    """What indexing and retrieval need from an encoder (tests pass small fakes)."""

    identity: str  # what the embeddings depend on (model, revision, precision): cache keys
    dim: int

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...  # (n, dim) float32, unit norm


class SentenceEncoder:
    """A sentence-transformers model with the prefixes its retriever config names."""

    def __init__(self, model, cfg: RetrieverConfig, identity: str) -> None:
        self.model = model
        self.batch_size = cfg.batch_size
        self.device = str(model.device)
        self.precision = "float16" if next(model.parameters()).dtype.itemsize == 2 else "float32"
        self.identity = f"{identity}|max_seq_length={model.max_seq_length}|{self.precision}"
        get_dim = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        self.max_seq_length = int(model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        ids = self.model.tokenizer(list(texts), add_special_tokens=False, verbose=False)
        return [len(x) for x in ids["input_ids"]]

    def special_tokens(self) -> int:
        return int(self.model.tokenizer.num_special_tokens_to_add())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(embeddings, dtype=np.float32).reshape(len(texts), self.dim)


def _model_location(cfg: RetrieverConfig) -> tuple[str, str, dict]:
    """(where to load from, identity for cache keys, extra loading arguments)."""
    if cfg.source == EncoderSource.package:
        if not cfg.package or not cfg.path:
            raise UserError(
                "source=package needs `package` and `path` (the model directory inside it)",
                field="retriever.package",
            )
        location = find_package_file(
            cfg.package, cfg.path, fields=("retriever.package", "retriever.path")
        )
        identity = f"package:{cfg.package}=={package_version(cfg.package)}/{cfg.path}"
        # local_files_only: files on disk never send a request to the hub (none is reachable
        # on these machines), without switching the whole process offline.
        return str(location), identity, {"local_files_only": True}
    if not cfg.path:
        raise UserError(
            "source=hf needs `path` (a hub id or a local directory)", field="retriever.path"
        )
    local = Path(cfg.path).expanduser()
    if local.is_dir():
        # A local copy can be replaced in place: its newest file time is part of the identity.
        stamp = max((f.stat().st_mtime_ns for f in local.rglob("*") if f.is_file()), default=0)
        return str(local.resolve()), f"dir:{local.resolve()}@{stamp}", {"local_files_only": True}
    if cfg.path.startswith(("/", "./", "../", "~")):
        raise UserError(f"no such encoder directory: {cfg.path}", field="retriever.path")
    return cfg.path, f"hf:{cfg.path}@{cfg.revision or 'default'}", {"revision": cfg.revision}


def resolve_encoder_device(spec: str):
    return resolve_device(spec, field="retriever.device")


def load_encoder(cfg: RetrieverConfig) -> SentenceEncoder:
    """Load the retriever's sentence-transformers model (packaged, local or from the hub)."""
    location, identity, kwargs = _model_location(cfg)
    device = resolve_encoder_device(cfg.device)
    if cfg.batch_size < 1:
        raise UserError(f"must be at least 1, got {cfg.batch_size}", field="retriever.batch_size")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(location, device=str(device), **kwargs)
    except (OSError, ValueError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(
            f"could not load encoder '{location}' ({first_line}); without network access, "
            "download it first and set retriever.path to the local directory",
            field="retriever.path",
        ) from None
    if cfg.max_seq_length is not None:
        model.max_seq_length = cfg.max_seq_length
    if device.type == "cuda" and cfg.fp16:
        model.half()
    model.eval()
    encoder = SentenceEncoder(model, cfg, f"{cfg.name}|{identity}")
    log.info(
        "Loaded encoder %s from %s on %s (%d-d, %s)",
        cfg.name,
        location,
        encoder.device,
        encoder.dim,
        encoder.precision,
    )
    return encoder


def encode_to_file(
    encoder: TextEncoder, texts: Sequence[str], path: str | Path, *, progress: bool = True
) -> np.ndarray:
    """Embed ``texts`` into a float32 ``.npy`` file at ``path``; returns it memory-mapped.

    Texts go to the encoder longest first (little padding per batch) and each block's rows are
    written at the texts' own positions, so row i is always text i.
    """
    out = np.lib.format.open_memmap(
        Path(path), mode="w+", dtype=np.float32, shape=(len(texts), encoder.dim)
    )
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with tqdm(
        total=len(texts),
        desc="embedding chunks",
        unit="chunk",
        disable=not progress or len(texts) <= ENCODE_BLOCK,
    ) as bar:
        for start in range(0, len(texts), ENCODE_BLOCK):
            rows = np.sort(order[start : start + ENCODE_BLOCK])
            out[rows] = encoder.encode([texts[i] for i in rows])
            bar.update(len(rows))
    out.flush()
    return out

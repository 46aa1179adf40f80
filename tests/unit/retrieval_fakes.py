"""A small deterministic encoder for retrieval tests that need no model.

Bag of words hashed into ``dim`` buckets and normalised: texts sharing words are near, so
retrieval behaves sensibly, and a call costs microseconds. Importable by spawned processes (the
concurrent-build test), so it lives in a module of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+")


class HashingEncoder:
    def __init__(
        self,
        dim: int = 64,
        *,
        identity: str = "hashing-test-encoder",
        log_file: str | Path | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.dim = dim
        self.identity = f"{identity}|dim={dim}"
        self.log_file = None if log_file is None else Path(log_file)
        self.delay_s = delay_s
        self.encoded_texts = 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded_texts += len(texts)
        if self.log_file is not None:  # visible across processes
            with self.log_file.open("a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {len(texts)}\n")
        if self.delay_s:
            time.sleep(self.delay_s)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                bucket = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
                out[row, bucket % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

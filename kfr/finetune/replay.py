"""Replay: general text mixed into fine-tuning against forgetting (``finetune.replay_ratio``,
from ``finetune.replay_source``: ``file`` or ``self``).

``file``: ``finetune.replay_file``, a knowledge base in any format
:func:`kfr.data.readers.read_knowledge_base` reads (JSONL or a directory of ``.txt``/``.md``
files); each of its documents is one replay text. ``self``: texts the base model samples itself
(:mod:`kfr.finetune.self_replay`; no file needed, so the embedded default can replay offline).
``round(replay_ratio * training texts)`` of them (Python's round: halves to even) are appended
after the knowledge texts, in an order shuffled by the seed, cycling through the file again when
it holds fewer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import FinetuneConfig, ReplaySource
from kfr.data.readers import read_knowledge_base

# count -> (that many texts the base model wrote, the file they are cached in)
OwnTexts = Callable[[int], tuple[list[str], Path]]


def replay_texts(
    finetune: FinetuneConfig, n_training: int, seed: int, *, own: OwnTexts | None = None
) -> tuple[list[str], dict[str, Any]]:
    """The replay texts for ``n_training`` training texts, and their stats for results.
    ``own`` samples the base model's texts (``replay_source=self``)."""
    ratio, path = finetune.replay_ratio, finetune.replay_file
    if not (math.isfinite(ratio) and ratio >= 0):
        raise UserError(f"must be >= 0, got {ratio}", field="finetune.replay_ratio")
    if ratio == 0:
        return [], {"replay_texts": 0, "replay_file": None}
    if finetune.replay_source == ReplaySource.self:
        if path:
            raise UserError(
                "replay_source=self samples the base model; unset finetune.replay_file or use "
                "finetune.replay_source=file",
                field="finetune.replay_file",
            )
        if own is None:
            raise ValueError("replay_source=self needs the base model's sampler (own=)")
        texts, cached = own(round(ratio * n_training))
        return texts, {"replay_texts": len(texts), "replay_file": str(cached), "source": "self"}
    if not path:
        raise UserError(
            "replay needs a file of general text: set finetune.replay_file=PATH",
            field="finetune.replay_ratio",
        )
    source = Path(path).expanduser()
    documents = read_knowledge_base(source)
    count = round(ratio * n_training)
    order = list(range(len(documents)))
    random.Random(f"kfr-replay:{seed}").shuffle(order)
    chosen = [documents[order[i % len(order)]].text for i in range(count)]
    return chosen, {"replay_texts": count, "replay_file": str(source)}


def with_replay(
    finetune: FinetuneConfig, texts: Sequence[str], seed: int, *, own: OwnTexts | None = None
) -> tuple[list[str], dict[str, Any]]:
    """``texts`` followed by their replay texts."""
    extra, stats = replay_texts(finetune, len(texts), seed, own=own)
    return [*texts, *extra], stats


__all__ = ["replay_texts", "with_replay"]

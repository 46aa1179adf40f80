"""Replay: general text mixed into fine-tuning against forgetting (``finetune.replay_file``,
``finetune.replay_ratio``).

The file is a knowledge base in any format :func:`kfr.data.readers.read_knowledge_base` reads
(JSONL or a directory of ``.txt``/``.md`` files); each of its documents is one replay text.
``round(replay_ratio * training texts)`` of them (Python's round: halves to even) are appended
after the knowledge texts, in an order shuffled by the seed, cycling through the file again when
it holds fewer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import FinetuneConfig
from kfr.data.readers import read_knowledge_base


def replay_texts(
    finetune: FinetuneConfig, n_training: int, seed: int
) -> tuple[list[str], dict[str, Any]]:
    """The replay texts for ``n_training`` training texts, and their stats for results."""
    ratio, path = finetune.replay_ratio, finetune.replay_file
    if not (math.isfinite(ratio) and ratio >= 0):
        raise UserError(f"must be >= 0, got {ratio}", field="finetune.replay_ratio")
    if ratio == 0:
        return [], {"replay_texts": 0, "replay_file": None}
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
    finetune: FinetuneConfig, texts: Sequence[str], seed: int
) -> tuple[list[str], dict[str, Any]]:
    """``texts`` followed by their replay texts."""
    extra, stats = replay_texts(finetune, len(texts), seed)
    return [*texts, *extra], stats


__all__ = ["replay_texts", "with_replay"]

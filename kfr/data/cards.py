"""Dataset cards: a small JSON file beside every dataset kfr generates or fetches.

A card says where the data came from and how to make it again: the tool and its version, the
command and settings, the source (an API, a model, a local copy), counts, and the SHA-256 of
every file it describes. Cards are written last and atomically, so a card whose hashes match its
files means the dataset is complete.

Where a card lives, for a data file ``DIR/NAME.EXT``:

- ``DIR/NAME.card.json``: the card of that one file (``kfr-kb``, ``kfr-questions``);
- ``DIR/card.json``: the card of a whole generated directory (``kfr-novel-facts``).

:func:`read_card` looks for the first, then the second, so a run's ``results.json`` can point at
the card of whatever question file it read.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kfr import __version__
from kfr.core.storage import atomic_write_json
from kfr.data.schema import Question

CARD_SUFFIX = ".card.json"
DIRECTORY_CARD = "card.json"
CARD_VERSION = 1


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(data_path: str | Path) -> Path:
    """Where the card of ``data_path`` goes: ``kb.jsonl`` -> ``kb.card.json`` beside it."""
    data_path = Path(data_path)
    return data_path.with_name(data_path.stem + CARD_SUFFIX)


def find_card(data_path: str | Path) -> Path | None:
    """The card that describes ``data_path``: its own card, else its directory's, else None."""
    data_path = Path(data_path)
    for candidate in (card_path(data_path), data_path.parent / DIRECTORY_CARD):
        if candidate.is_file():
            return candidate
    return None


def read_card(questions_path: str | Path) -> dict[str, Any] | None:
    """The card of a data file (see :func:`find_card`) as a dict, or None when there is none.

    The dict gains ``"card_path"``. A card that is not valid JSON reads as None: a card is
    documentation, and a damaged one must not stop an evaluation.
    """
    path = find_card(questions_path)
    if path is None:
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(card, dict):
        return None
    return {**card, "card_path": str(path)}


def card_record(
    *,
    kind: str,
    tool: str,
    source: Mapping[str, Any],
    settings: Mapping[str, Any],
    counts: Mapping[str, Any],
    sha256: Mapping[str, str],
    command: Sequence[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The card's content; ``command`` defaults to this process's command line."""
    return {
        "card_version": CARD_VERSION,
        "kind": kind,
        "tool": tool,
        "kfr_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(command if command is not None else sys.argv),
        "source": dict(source),
        "settings": dict(settings),
        "counts": dict(counts),
        "sha256": dict(sha256),
        **fields,
    }


def write_card(
    data_path: str | Path,
    *,
    kind: str,
    tool: str,
    source: Mapping[str, Any],
    settings: Mapping[str, Any],
    counts: Mapping[str, Any],
    extra_files: Sequence[str | Path] = (),
    command: Sequence[str] | None = None,
    **fields: Any,
) -> Path:
    """Write the card of ``data_path`` (and of ``extra_files`` beside it); returns its path.

    ``kind`` names what the data is (``knowledge_base``, ``questions``), ``tool`` the kfr module
    that made it, ``source`` where the content came from, ``settings`` everything needed to make
    it again. Extra keyword arguments are added as top-level keys.
    """
    data_path = Path(data_path)
    files = [data_path, *(Path(f) for f in extra_files)]
    card = card_record(
        kind=kind,
        tool=tool,
        source=source,
        settings=settings,
        counts=counts,
        sha256={f.name: sha256_file(f) for f in files},
        command=command,
        **fields,
    )
    path = card_path(data_path)
    atomic_write_json(path, card)
    return path


def questions_digest(questions: Iterable[Question]) -> str:
    """SHA-256 of a question set's canonical JSON: the same questions give the same digest,
    whatever file, copy or hub they were read from."""
    digest = hashlib.sha256()
    for question in questions:
        digest.update(json.dumps(question.to_json(), sort_keys=True).encode("utf-8") + b"\n")
    return digest.hexdigest()


__all__ = [
    "CARD_SUFFIX",
    "DIRECTORY_CARD",
    "card_path",
    "card_record",
    "find_card",
    "questions_digest",
    "read_card",
    "sha256_file",
    "write_card",
]

"""Paraphrase caches: JSONL ``{"id": doc_id, "paraphrases": [str, ...]}`` per line, one line per
knowledge-base document. Read whole and checked, or written atomically."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from kfr.core.storage import atomic_write_jsonl
from kfr.data.records import (
    UniqueIds,
    Where,
    check_file,
    get_field,
    jsonl_records,
    nonblank_str,
    string_list,
)


def read_paraphrases(
    path: str | Path, *, known_doc_ids: Collection[str] | None = None
) -> dict[str, list[str]]:
    """Read a paraphrase cache: ``{"id": doc_id, "paraphrases": [str, ...]}`` per line; with
    ``known_doc_ids``, every id must be one of them (a knowledge-base document), else the error
    names the line."""
    path = Path(path)
    check_file(path, "paraphrase file")
    paraphrases: dict[str, list[str]] = {}
    ids = UniqueIds("document")
    for number, record in jsonl_records(path):
        where = Where(path, number)
        id_ = nonblank_str(record, "id", where)
        ids.add(id_, where)
        if known_doc_ids is not None and id_ not in known_doc_ids:
            raise where.error(f"names unknown document '{id_}' (not in the knowledge base)", "id")
        texts = get_field(record, "paraphrases", where, "array")
        paraphrases[id_] = list(string_list(texts, "paraphrases", where, what="paraphrase"))
    return paraphrases


def write_paraphrases_jsonl(path: str | Path, paraphrases: Mapping[str, Sequence[str]]) -> None:
    atomic_write_jsonl(
        path, ({"id": id_, "paraphrases": list(texts)} for id_, texts in paraphrases.items())
    )


__all__ = ["read_paraphrases", "write_paraphrases_jsonl"]

"""Training question-answer files: JSONL ``{"id", "doc_id", "question", "answer"}`` per line
(all non-blank strings; ids unique), the pairs of ``qa=file`` and of the ``qa=llm`` cache. Read
whole and checked (every problem as ``path:line: field 'x': what``), or written atomically."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.storage import atomic_write_jsonl
from kfr.data.records import Where, check_file, nonblank_str, parse_unique_records
from kfr.data.schema import QaPair

QA_FIELDS = ("id", "doc_id", "question", "answer")


def read_qa_pairs(
    path: str | Path, *, known_doc_ids: Collection[str] | None = None
) -> list[QaPair]:
    """Read a question-answer file; with ``known_doc_ids``, every ``doc_id`` must be one of them
    (a knowledge-base document), else the error names the line."""
    path = Path(path)
    check_file(path, "question-answer file")

    def parse(record: dict[str, Any], where: Where) -> QaPair:
        values = {key: nonblank_str(record, key, where) for key in QA_FIELDS}
        if known_doc_ids is not None and values["doc_id"] not in known_doc_ids:
            raise where.error(
                f"unknown document '{values['doc_id']}' (not in the knowledge base)", "doc_id"
            )
        return QaPair(**values, where=where)

    pairs = parse_unique_records(path, "question-answer pair", parse)
    if not pairs:
        raise UserError("no question-answer pairs", path=path)
    return pairs


def write_qa_pairs_jsonl(path: str | Path, pairs: Iterable[QaPair]) -> None:
    atomic_write_jsonl(path, (pair.to_json() for pair in pairs))


__all__ = ["QA_FIELDS", "read_qa_pairs", "write_qa_pairs_jsonl"]

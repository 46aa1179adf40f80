"""Knowledge bases: a JSONL file ``{"id": str, "text": str, "title": str?, "meta": object?}`` per
line, or a directory of ``.txt``/``.md`` files (id = POSIX path relative to the directory, title
= the first Markdown heading, else the file name). Read whole and checked, or written atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.storage import atomic_write_jsonl
from kfr.data.records import Where, get_field, nonblank_str, parse_unique_records, read_text
from kfr.data.schema import Document

KNOWLEDGE_BASE_SUFFIXES = (".txt", ".md")


def _document_from_record(record: Mapping[str, Any], where: Where) -> Document:
    id_ = nonblank_str(record, "id", where)
    text = nonblank_str(record, "text", where)
    title = get_field(record, "title", where, "string", optional=True)
    meta = get_field(record, "meta", where, "object", optional=True)
    return Document(id=id_, text=text, title=title, meta=dict(meta or {}), where=where)


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# "):
            title = stripped[2:].strip().rstrip("#").strip()
            if title:
                return title
    return None


def _read_knowledge_directory(root: Path) -> list[Document]:
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in KNOWLEDGE_BASE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        suffixes = "/".join(KNOWLEDGE_BASE_SUFFIXES)
        raise UserError(f"empty knowledge base: no {suffixes} files in the directory", path=root)
    documents = []
    for file in files:
        text = read_text(file).strip()
        if not text:
            raise UserError("empty document", path=file, field="text")
        title = _markdown_title(text) or file.stem
        documents.append(
            Document(
                id=file.relative_to(root).as_posix(), text=text, title=title, where=Where(file)
            )
        )
    return documents


def read_knowledge_base(path: str | Path) -> list[Document]:
    """Read a JSONL knowledge base or a directory of ``.txt``/``.md`` files (recursive)."""
    path = Path(path)
    if not path.exists():
        raise UserError("knowledge base not found", path=path)
    if path.is_dir():
        return _read_knowledge_directory(path)
    if path.suffix.lower() != ".jsonl":
        raise UserError(
            f"unsupported knowledge-base format '{path.suffix}': "
            "expected a .jsonl file or a directory of .txt/.md files",
            path=path,
        )
    documents = parse_unique_records(path, "document", _document_from_record)
    if not documents:
        raise UserError("empty knowledge base: no documents", path=path)
    return documents


def write_knowledge_base_jsonl(path: str | Path, documents: Iterable[Document]) -> None:
    atomic_write_jsonl(path, (document.to_json() for document in documents))


__all__ = ["KNOWLEDGE_BASE_SUFFIXES", "read_knowledge_base", "write_knowledge_base_jsonl"]

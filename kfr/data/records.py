"""Checked records of kfr's data files: where a problem is (``path:line: field 'x'``), JSON
types, UTF-8 text, JSONL lines and unique ids. The readers of knowledge bases, questions and
paraphrases build on these, so every bad input is reported the same way: one
:class:`~kfr.core.errors.UserError` naming the first problem."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kfr.core.errors import UserError


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


T = TypeVar("T")


class Where:
    """Where a record came from: a path and optional 1-based line, for error messages."""

    def __init__(self, path: str | Path, line: int | None = None) -> None:
        self.path = path
        self.line = line

    def error(self, message: str, field: str | None = None) -> UserError:
        return UserError(message, path=self.path, line=self.line, field=field)

    def __str__(self) -> str:
        return str(self.path) if self.line is None else f"{self.path}:{self.line}"

    def __repr__(self) -> str:
        return f"Where({str(self)!r})"


def check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{what} not found", path=path)
    if path.is_dir():
        raise UserError(f"{what} is a directory, expected a file", path=path)


def read_text(path: Path) -> str:
    """The file's text as UTF-8 (a leading byte-order mark is dropped)."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"not valid UTF-8 ({e.reason} at byte {e.start})", path=path, line=line
        ) from e


def jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL file."""
    # Split on "\n" only: str.splitlines() also breaks at U+2028 etc., legal inside JSON strings.
    for number, raw in enumerate(read_text(path).split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"malformed JSON: {e.msg} (column {e.colno})", path=path, line=number
            ) from e
        if not isinstance(obj, dict):
            raise UserError(f"expected a JSON object, got {json_type(obj)}", path=path, line=number)
        yield number, obj


def get_field(
    record: Mapping[str, Any], key: str, where: Where, expected: str, *, optional: bool = False
) -> Any:
    """``record[key]`` checked against a JSON type name; None when optional and absent/null."""
    if key not in record or (optional and record[key] is None):
        if optional:
            return None
        raise where.error("missing", key)
    value = record[key]
    if json_type(value) != expected:
        raise where.error(f"expected {expected}, got {json_type(value)}", key)
    return value


def nonblank_str(record: Mapping[str, Any], key: str, where: Where) -> str:
    value = get_field(record, key, where, "string")
    if not value.strip():
        raise where.error("must not be empty", key)
    return value


def string_list(values: list[Any], key: str, where: Where, *, what: str) -> tuple[str, ...]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise where.error(f"{what} {i} must be a string, got {json_type(value)}", key)
        if not value.strip():
            raise where.error(f"{what} {i} must not be empty", key)
    return tuple(values)


class UniqueIds:
    """Remembers where each id was first seen and rejects a second occurrence."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.first_seen: dict[str, int | None] = {}

    def add(self, id_: str, where: Where) -> None:
        if id_ in self.first_seen:
            first = self.first_seen[id_]
            at = f" (first on line {first})" if first is not None else ""
            raise where.error(f"duplicate {self.kind} id '{id_}'{at}", "id")
        self.first_seen[id_] = where.line


__all__ = [
    "UniqueIds",
    "Where",
    "check_file",
    "get_field",
    "json_type",
    "jsonl_records",
    "nonblank_str",
    "read_text",
    "string_list",
]


def parse_unique_records(
    path: Path, kind: str, parse: Callable[[dict[str, Any], Where], T]
) -> list[T]:
    """Every record of a JSONL file parsed by ``parse(record, where)``; a second record with the
    same ``id`` is an error naming both lines."""
    parsed = []
    ids = UniqueIds(kind)
    for number, record in jsonl_records(path):
        where = Where(path, number)
        if "id" in record and isinstance(record["id"], str):
            ids.add(record["id"], where)
        parsed.append(parse(record, where))
    return parsed

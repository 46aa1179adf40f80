"""Readers and writers for knowledge bases, question sets and paraphrase caches.

Every reader validates the whole input before returning anything and reports the first problem
as a one-line :class:`~kfr.errors.UserError` (``path:line: field 'x': what is wrong``).

Formats (documented in the README):

- knowledge base: JSONL ``{"id": str, "text": str, "title": str?, "meta": object?}`` per line,
  or a directory of ``.txt``/``.md`` files (id = POSIX path relative to the directory);
- questions: JSONL ``{"id": str, "question": str, "choices": [str, ...],
  "answer": int | "A".."Z", "subject": str?, "source_ids": [str]?}``, MMLU's header-less CSV
  layout (question, A, B, C, D, answer letter), or a Hugging Face dataset with the JSONL fields;
- paraphrases: JSONL ``{"id": doc_id, "paraphrases": [str, ...]}``.

Unknown keys are ignored; blank lines are skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kfr.data.schema import Document, Question
from kfr.errors import UserError
from kfr.storage import atomic_write_jsonl

KNOWLEDGE_BASE_SUFFIXES = (".txt", ".md")
QUESTION_SUFFIXES = (".jsonl", ".csv")
MMLU_CSV_COLUMNS = ("question", "A", "B", "C", "D", "answer")
_SPLIT_SUFFIXES = ("_test", "_dev", "_val")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --------------------------------------------------------------------------- low-level helpers


def _json_type(value: Any) -> str:
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


class _Where:
    """Where a record came from: a path and optional 1-based line, for error messages."""

    def __init__(self, path: str | Path, line: int | None = None) -> None:
        self.path = path
        self.line = line

    def error(self, message: str, field: str | None = None) -> UserError:
        return UserError(message, path=self.path, line=self.line, field=field)


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{what} not found", path=path)
    if path.is_dir():
        raise UserError(f"{what} is a directory, expected a file", path=path)


def _read_text(path: Path) -> str:
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


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL file."""
    # Split on "\n" only: str.splitlines() also breaks at U+2028 etc., legal inside JSON strings.
    for number, raw in enumerate(_read_text(path).split("\n"), start=1):
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
            raise UserError(
                f"expected a JSON object, got {_json_type(obj)}", path=path, line=number
            )
        yield number, obj


def _get(
    record: Mapping[str, Any], key: str, where: _Where, expected: str, *, optional: bool = False
) -> Any:
    """``record[key]`` checked against a JSON type name; None when optional and absent/null."""
    if key not in record or (optional and record[key] is None):
        if optional:
            return None
        raise where.error("missing", key)
    value = record[key]
    if _json_type(value) != expected:
        raise where.error(f"expected {expected}, got {_json_type(value)}", key)
    return value


def _nonblank_str(record: Mapping[str, Any], key: str, where: _Where) -> str:
    value = _get(record, key, where, "string")
    if not value.strip():
        raise where.error("must not be empty", key)
    return value


def _string_list(values: list[Any], key: str, where: _Where, *, what: str) -> tuple[str, ...]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise where.error(f"{what} {i} must be a string, got {_json_type(value)}", key)
        if not value.strip():
            raise where.error(f"{what} {i} must not be empty", key)
    return tuple(values)


class _UniqueIds:
    """Remembers where each id was first seen and rejects a second occurrence."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.first_seen: dict[str, int | None] = {}

    def add(self, id_: str, where: _Where) -> None:
        if id_ in self.first_seen:
            first = self.first_seen[id_]
            at = f" (first on line {first})" if first is not None else ""
            raise where.error(f"duplicate {self.kind} id '{id_}'{at}", "id")
        self.first_seen[id_] = where.line


# --------------------------------------------------------------------------- knowledge base


def _document_from_record(record: Mapping[str, Any], where: _Where) -> Document:
    id_ = _nonblank_str(record, "id", where)
    text = _nonblank_str(record, "text", where)
    title = _get(record, "title", where, "string", optional=True)
    meta = _get(record, "meta", where, "object", optional=True)
    return Document(id=id_, text=text, title=title, meta=dict(meta or {}))


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
        text = _read_text(file).strip()
        if not text:
            raise UserError("empty document", path=file, field="text")
        title = _markdown_title(text) or file.stem
        documents.append(Document(id=file.relative_to(root).as_posix(), text=text, title=title))
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
    documents = []
    ids = _UniqueIds("document")
    for number, record in _jsonl_records(path):
        where = _Where(path, number)
        if "id" in record and isinstance(record["id"], str):
            ids.add(record["id"], where)
        documents.append(_document_from_record(record, where))
    if not documents:
        raise UserError("empty knowledge base: no documents", path=path)
    return documents


def write_knowledge_base_jsonl(path: str | Path, documents: Iterable[Document]) -> None:
    atomic_write_jsonl(path, (document.to_json() for document in documents))


# --------------------------------------------------------------------------- questions


def _answer_index(value: Any, n_choices: int, where: _Where) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < n_choices:
            raise where.error(
                f"index {value} is out of range for {n_choices} choices (0-{n_choices - 1})",
                "answer",
            )
        return value
    if isinstance(value, str):
        if len(value) == 1 and value in _LETTERS:
            index = _LETTERS.index(value)
            if index >= n_choices:
                raise where.error(
                    f"letter '{value}' is out of range for {n_choices} choices "
                    f"(A-{_LETTERS[n_choices - 1]})",
                    "answer",
                )
            return index
        raise where.error(f"expected an index or a letter A-Z, got '{value}'", "answer")
    raise where.error(
        f"expected an integer index or a letter A-Z, got {_json_type(value)}", "answer"
    )


def _question_from_record(record: Mapping[str, Any], where: _Where) -> Question:
    id_ = _nonblank_str(record, "id", where)
    question = _nonblank_str(record, "question", where)
    choices = _get(record, "choices", where, "array")
    if len(choices) < 2:
        raise where.error(f"expected at least 2 choices, got {len(choices)}", "choices")
    choices = _string_list(choices, "choices", where, what="choice")
    if "answer" not in record:
        raise where.error("missing", "answer")
    answer = _answer_index(record["answer"], len(choices), where)
    subject = _get(record, "subject", where, "string", optional=True)
    source_ids = _get(record, "source_ids", where, "array", optional=True)
    if source_ids is not None:
        source_ids = _string_list(source_ids, "source_ids", where, what="id")
    return Question(
        id=id_,
        question=question,
        choices=choices,
        answer=answer,
        subject=subject or None,
        source_ids=source_ids,
    )


def _read_questions_jsonl(path: Path) -> list[Question]:
    questions = []
    ids = _UniqueIds("question")
    for number, record in _jsonl_records(path):
        where = _Where(path, number)
        if "id" in record and isinstance(record["id"], str):
            ids.add(record["id"], where)
        questions.append(_question_from_record(record, where))
    return questions


def mmlu_subject(stem: str) -> str:
    """``anatomy_test`` -> ``anatomy``: the subject an MMLU CSV file name stands for."""
    for suffix in _SPLIT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _read_questions_csv(path: Path) -> list[Question]:
    subject = mmlu_subject(path.stem)
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    questions = []
    n_choices = len(MMLU_CSV_COLUMNS) - 2
    while True:
        line = reader.line_num + 1  # where the next record starts (fields may span lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise UserError(f"malformed CSV: {e}", path=path, line=line) from e
        if not row or not any(cell.strip() for cell in row):
            continue
        where = _Where(path, line)
        if len(row) != len(MMLU_CSV_COLUMNS):
            raise where.error(
                f"expected {len(MMLU_CSV_COLUMNS)} columns ({', '.join(MMLU_CSV_COLUMNS)}), "
                f"got {len(row)}"
            )
        record = dict(zip(MMLU_CSV_COLUMNS, row, strict=True))
        question = _nonblank_str(record, "question", where)
        for letter in MMLU_CSV_COLUMNS[1:-1]:
            if not record[letter].strip():
                raise where.error("choice must not be empty", letter)
        letter = record["answer"].strip()
        if len(letter) != 1 or letter not in _LETTERS[:n_choices]:
            raise where.error(
                f"expected one of {', '.join(_LETTERS[:n_choices])}, got '{record['answer']}'",
                "answer",
            )
        questions.append(
            Question(
                id=f"{path.stem}-{len(questions)}",
                question=question,
                choices=tuple(row[1:-1]),
                answer=_LETTERS.index(letter),
                subject=subject,
            )
        )
    return questions


def read_questions(path: str | Path) -> list[Question]:
    """Read a ``.jsonl`` question set or an MMLU-layout ``.csv`` file.

    MMLU CSV ids are ``{file stem}-{0-based row index}`` and the subject is the file stem without
    a trailing ``_test``/``_dev``/``_val``.
    """
    path = Path(path)
    _check_file(path, "question file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        questions = _read_questions_jsonl(path)
    elif suffix == ".csv":
        questions = _read_questions_csv(path)
    else:
        raise UserError(
            f"unsupported question format '{path.suffix}': expected one of "
            f"{', '.join(QUESTION_SUFFIXES)} (or a Hugging Face dataset)",
            path=path,
        )
    if not questions:
        raise UserError("no questions", path=path)
    return questions


def load_hf_questions(
    path: str,
    name: str | None = None,
    split: str = "test",
    *,
    data_files: str | Path | Sequence[str | Path] | None = None,
    cache_dir: str | Path | None = None,
) -> list[Question]:
    """Load questions from a Hugging Face dataset whose rows use the JSONL field names.

    E.g. ``load_hf_questions("cais/mmlu", "anatomy", "test")``; a local file works through a
    builder: ``load_hf_questions("json", None, "train", data_files="q.jsonl")``. Ids are the
    row's ``id`` if it has one, else ``{split}-{row index}``.
    """
    label = path if name is None else f"{path}/{name}"
    label = f"{label}[{split}]"
    try:
        import datasets

        kwargs: dict[str, Any] = {"split": split}
        if data_files is not None:
            kwargs["data_files"] = (
                str(data_files)
                if isinstance(data_files, str | Path)
                else [str(f) for f in data_files]
            )
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
        dataset = datasets.load_dataset(path, name, **kwargs)
    except Exception as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise UserError(
            f"cannot load Hugging Face dataset {label}: {reason}. Download it while online "
            "(it is then cached under ~/.cache/huggingface), or point data.questions at a local "
            ".jsonl or MMLU .csv file",
        ) from e

    return questions_from_records(dataset, label, id_prefix=split)


def questions_from_records(
    records: Iterable[Mapping[str, Any]], label: str, *, id_prefix: str
) -> list[Question]:
    """Questions from rows with the JSONL field names (a dataset, a parquet table).

    Ids are the row's ``id`` if it has one, else ``{id_prefix}-{row index}``; a bad row is
    reported as ``{label} row {index}``.
    """
    questions = []
    ids = _UniqueIds("question")
    for index, row in enumerate(records):
        where = _Where(f"{label} row {index}")
        record = dict(row)
        row_id = record.get("id")
        if isinstance(row_id, int) and not isinstance(row_id, bool):
            record["id"] = str(row_id)
        elif row_id is None:
            record["id"] = f"{id_prefix}-{index}"
        if isinstance(record["id"], str):
            ids.add(record["id"], where)
        questions.append(_question_from_record(record, where))
    if not questions:
        raise UserError("no questions", path=label)
    return questions


def validate_source_ids(
    questions: Iterable[Question], documents: Iterable[Document], questions_path: str | Path
) -> None:
    """Every ``source_ids`` entry of every question must name a knowledge-base document."""
    known = {document.id for document in documents}
    for question in questions:
        for source_id in question.source_ids or ():
            if source_id not in known:
                raise UserError(
                    f"question '{question.id}' names unknown document '{source_id}'",
                    path=questions_path,
                    field="source_ids",
                )


def write_questions_jsonl(path: str | Path, questions: Iterable[Question]) -> None:
    atomic_write_jsonl(path, (question.to_json() for question in questions))


# --------------------------------------------------------------------------- paraphrases


def read_paraphrases(path: str | Path) -> dict[str, list[str]]:
    """Read a paraphrase cache: ``{"id": doc_id, "paraphrases": [str, ...]}`` per line."""
    path = Path(path)
    _check_file(path, "paraphrase file")
    paraphrases: dict[str, list[str]] = {}
    ids = _UniqueIds("document")
    for number, record in _jsonl_records(path):
        where = _Where(path, number)
        id_ = _nonblank_str(record, "id", where)
        ids.add(id_, where)
        texts = _get(record, "paraphrases", where, "array")
        paraphrases[id_] = list(_string_list(texts, "paraphrases", where, what="paraphrase"))
    return paraphrases


def write_paraphrases_jsonl(path: str | Path, paraphrases: Mapping[str, Sequence[str]]) -> None:
    atomic_write_jsonl(
        path, ({"id": id_, "paraphrases": list(texts)} for id_, texts in paraphrases.items())
    )


__all__ = [
    "KNOWLEDGE_BASE_SUFFIXES",
    "MMLU_CSV_COLUMNS",
    "QUESTION_SUFFIXES",
    "load_hf_questions",
    "mmlu_subject",
    "questions_from_records",
    "read_knowledge_base",
    "read_paraphrases",
    "read_questions",
    "validate_source_ids",
    "write_knowledge_base_jsonl",
    "write_paraphrases_jsonl",
    "write_questions_jsonl",
]

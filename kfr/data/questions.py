"""Question sets: JSONL ``{"id": str, "question": str, "choices": [str, ...], "answer": int |
"A".."Z", "subject": str?, "source_ids": [str]?}``, MMLU's header-less CSV layout (question, A,
B, C, D, answer letter), or rows with the JSONL field names (a Hugging Face dataset, a parquet
table). Read whole and checked, or written atomically; :func:`validate_source_ids` checks them
against a knowledge base.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.storage import atomic_write_jsonl
from kfr.data.records import (
    UniqueIds,
    Where,
    check_file,
    get_field,
    json_type,
    nonblank_str,
    parse_unique_records,
    read_text,
    string_list,
)
from kfr.data.schema import Document, Question

QUESTION_SUFFIXES = (".jsonl", ".csv")
MMLU_CSV_COLUMNS = ("question", "A", "B", "C", "D", "answer")
_SPLIT_SUFFIXES = ("_test", "_dev", "_val")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _answer_index(value: Any, n_choices: int, where: Where) -> int:
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
        f"expected an integer index or a letter A-Z, got {json_type(value)}", "answer"
    )


def _question_from_record(record: Mapping[str, Any], where: Where) -> Question:
    id_ = nonblank_str(record, "id", where)
    question = nonblank_str(record, "question", where)
    choices = get_field(record, "choices", where, "array")
    if len(choices) < 2:
        raise where.error(f"expected at least 2 choices, got {len(choices)}", "choices")
    choices = string_list(choices, "choices", where, what="choice")
    if "answer" not in record:
        raise where.error("missing", "answer")
    answer = _answer_index(record["answer"], len(choices), where)
    subject = get_field(record, "subject", where, "string", optional=True)
    source_ids = get_field(record, "source_ids", where, "array", optional=True)
    if source_ids is not None:
        source_ids = string_list(source_ids, "source_ids", where, what="id")
    return Question(
        id=id_,
        question=question,
        choices=choices,
        answer=answer,
        subject=subject or None,
        source_ids=source_ids,
        where=where,
    )


def _read_questions_jsonl(path: Path) -> list[Question]:
    return parse_unique_records(path, "question", _question_from_record)


def mmlu_subject(stem: str) -> str:
    """``anatomy_test`` -> ``anatomy``: the subject an MMLU CSV file name stands for."""
    for suffix in _SPLIT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _read_questions_csv(path: Path) -> list[Question]:
    subject = mmlu_subject(path.stem)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
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
        where = Where(path, line)
        if len(row) != len(MMLU_CSV_COLUMNS):
            raise where.error(
                f"expected {len(MMLU_CSV_COLUMNS)} columns ({', '.join(MMLU_CSV_COLUMNS)}), "
                f"got {len(row)}"
            )
        record = dict(zip(MMLU_CSV_COLUMNS, row, strict=True))
        question = nonblank_str(record, "question", where)
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
                where=where,
            )
        )
    return questions


def read_questions(path: str | Path) -> list[Question]:
    """Read a ``.jsonl`` question set or an MMLU-layout ``.csv`` file.

    MMLU CSV ids are ``{file stem}-{0-based row index}`` and the subject is the file stem without
    a trailing ``_test``/``_dev``/``_val``.
    """
    path = Path(path)
    check_file(path, "question file")
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
    ids = UniqueIds("question")
    for index, row in enumerate(records):
        where = Where(f"{label} row {index}")
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
    """Every ``source_ids`` entry of every question must name a knowledge-base document; the
    error points at the question's line (``questions_path`` for questions made in code)."""
    known = {document.id for document in documents}
    for question in questions:
        for source_id in question.source_ids or ():
            if source_id not in known:
                where = question.where or Where(questions_path)
                raise where.error(
                    f"question '{question.id}' names unknown document '{source_id}'",
                    "source_ids",
                )


def write_questions_jsonl(path: str | Path, questions: Iterable[Question]) -> None:
    atomic_write_jsonl(path, (question.to_json() for question in questions))


__all__ = [
    "MMLU_CSV_COLUMNS",
    "QUESTION_SUFFIXES",
    "load_hf_questions",
    "mmlu_subject",
    "questions_from_records",
    "read_questions",
    "validate_source_ids",
    "write_questions_jsonl",
]

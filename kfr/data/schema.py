"""The in-memory records every reader produces and every consumer takes.

The on-disk formats (JSONL, MMLU CSV, directories of text files, Hugging Face datasets) are
documented in the README; readers validate them and turn each record into one of these.

A record read from a file remembers where (``where``: path and line), so that a later error about
it (a question naming an unknown document) points at its line. ``where`` is never part of a
record's identity: not compared, not hashed, not written by ``to_json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfr.data.records import Where


@dataclass(frozen=True)
class Document:
    """One knowledge-base document."""

    id: str
    text: str
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Where it was read from (None: made in code); not compared, hashed or shown.
    where: Where | None = field(default=None, compare=False, repr=False, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.title is not None:
            record["title"] = self.title
        if self.meta:
            record["meta"] = self.meta
        return record


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` is the 0-based index of the correct choice."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None
    source_ids: tuple[str, ...] | None = None
    # Where it was read from (None: made in code); not compared, hashed or shown.
    where: Where | None = field(default=None, compare=False, repr=False, kw_only=True)

    @property
    def answer_text(self) -> str:
        return self.choices[self.answer]

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "question": self.question,
            "choices": list(self.choices),
            "answer": self.answer,
        }
        if self.subject is not None:
            record["subject"] = self.subject
        if self.source_ids is not None:
            record["source_ids"] = list(self.source_ids)
        return record


@dataclass(frozen=True)
class QaPair:
    """One training question with its answer, written from knowledge-base document ``doc_id``
    (never from an evaluation question). Trained as ``"Question: {question}\\nAnswer:"`` +
    ``" {answer}"``, the evaluation's cloze format."""

    id: str
    doc_id: str
    question: str
    answer: str
    # Where it was read from (None: made in code); not compared, hashed or shown.
    where: Where | None = field(default=None, compare=False, repr=False, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "question": self.question,
            "answer": self.answer,
        }

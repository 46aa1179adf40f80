"""Readers and writers for knowledge bases, question sets and paraphrase caches: one import
point for kfr's dataset files, each format owned by its own module.

Every reader validates the whole input before returning anything and reports the first problem
as a one-line :class:`~kfr.core.errors.UserError` (``path:line: field 'x': what is wrong``; see
:mod:`kfr.data.records`).

Formats (documented in the README):

- knowledge base (:mod:`kfr.data.knowledge_base`): JSONL ``{"id": str, "text": str,
  "title": str?, "meta": object?}`` per line, or a directory of ``.txt``/``.md`` files
  (id = POSIX path relative to the directory);
- questions (:mod:`kfr.data.questions`): JSONL ``{"id": str, "question": str,
  "choices": [str, ...], "answer": int | "A".."Z", "subject": str?, "source_ids": [str]?}``,
  MMLU's header-less CSV layout (question, A, B, C, D, answer letter), or a Hugging Face dataset
  with the JSONL fields;
- paraphrases (:mod:`kfr.data.paraphrases`): JSONL ``{"id": doc_id, "paraphrases": [str, ...]}``.

Unknown keys are ignored; blank lines are skipped.
"""

from __future__ import annotations

from kfr.data.knowledge_base import (
    KNOWLEDGE_BASE_SUFFIXES,
    read_knowledge_base,
    write_knowledge_base_jsonl,
)
from kfr.data.paraphrases import read_paraphrases, write_paraphrases_jsonl
from kfr.data.questions import (
    MMLU_CSV_COLUMNS,
    QUESTION_SUFFIXES,
    load_hf_questions,
    mmlu_subject,
    questions_from_records,
    read_questions,
    validate_source_ids,
    write_questions_jsonl,
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

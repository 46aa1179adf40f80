"""Checks of one candidate question from an LLM reply: a question, exactly four distinct non-empty
options, one answer that names one of them (letter, index or the option's text), the answer
supported by the chunk by a lexical check (its normalised text occurs in the chunk, or at least
75% of its content words do) and not given away by the question itself. A failed check raises
:class:`Rejected` with its reason, one of :data:`REJECT_REASONS`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kfr.builders.questions.words import content_words, normal_text

N_OPTIONS = 4
LETTERS = "ABCD"
# Reasons a candidate is rejected, in the order they are checked (the card lists all of them);
# those after answer_in_question are checked by the pipeline and the leakage filter.
REJECT_REASONS = (
    "malformed",  # not an object with a question, four options and an answer
    "answer_not_in_choices",  # the answer names no option
    "duplicate_choices",  # two options are the same after normalisation
    "unsupported_answer",  # the chunk does not contain the answer (lexical check)
    "answer_in_question",  # the question gives its answer away
    "duplicate_question",  # the same question was already generated
    "not_grounded",  # support in its own chunk < min_support
    "not_specific",  # specificity <= min_specificity
    "not_kept",  # valid, but not among the chunk's `keep` most specific
    "known_without_context",  # the leakage filter's model answered it correctly
)


@dataclass
class Candidate:
    chunk_id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    specificity: float = 0.0
    support: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Rejected(ValueError):
    """A candidate that failed a check; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _answer_index(value: Any, choices: Sequence[str]) -> int:
    if isinstance(value, bool):
        raise Rejected("answer_not_in_choices")
    if isinstance(value, int):
        if 0 <= value < len(choices):
            return value
        raise Rejected("answer_not_in_choices")
    if isinstance(value, str):
        text = value.strip()
        letter = text.rstrip(".):").strip().upper()
        if len(letter) == 1 and letter in LETTERS[: len(choices)]:
            return LETTERS.index(letter)
        normal = normal_text(text)
        matches = [i for i, choice in enumerate(choices) if normal_text(choice) == normal]
        # "B. Paris" or "Paris": an option's own text, possibly after its letter
        if not matches and len(text) > 2 and text[1] in ".):" and text[0].upper() in LETTERS:
            return _answer_index(text[0], choices)
        if len(matches) == 1:
            return matches[0]
    raise Rejected("answer_not_in_choices")


_OPTION_LABEL = re.compile(r"^\s*(?:[A-Da-d][.):]|\([A-Da-d]\))\s+")


def check_structure(raw: Any) -> tuple[str, tuple[str, ...], int]:
    """(question, choices, answer) of a well-formed candidate, else ValueError with a reason."""
    if not isinstance(raw, dict):
        raise Rejected("malformed")
    question = raw.get("question")
    options = raw.get("options", raw.get("choices"))
    if not isinstance(question, str) or len(question.strip()) < 10 or len(question) > 500:
        raise Rejected("malformed")
    if not isinstance(options, list) or len(options) != N_OPTIONS:
        raise Rejected("malformed")
    if not all(isinstance(o, str | int | float) and str(o).strip() for o in options):
        raise Rejected("malformed")
    # Options sometimes come labelled ("A. Paris"): the label is not part of the option.
    choices = tuple(_OPTION_LABEL.sub("", str(o)).strip() for o in options)
    if "answer" not in raw:
        raise Rejected("malformed")
    answer = _answer_index(raw["answer"], choices)
    normal_choices = [normal_text(c) for c in choices]
    if len(set(normal_choices)) != len(choices) or not all(normal_choices):
        raise Rejected("duplicate_choices")
    return " ".join(question.split()), choices, answer


def validate_candidate(raw: Any, chunk_id: str, chunk_text: str) -> Candidate:
    """A checked candidate, or ValueError with ``reason`` (one of REJECT_REASONS)."""
    question, choices, answer = check_structure(raw)
    if not answer_supported(choices[answer], chunk_text):
        raise Rejected("unsupported_answer")
    answer_text = normal_text(choices[answer])
    if len(answer_text) > 3 and f" {answer_text} " in f" {normal_text(question)} ":
        raise Rejected("answer_in_question")
    return Candidate(chunk_id, question, choices, answer)


def answer_supported(answer: str, chunk_text: str) -> bool:
    """Whether ``chunk_text`` states ``answer``: as a phrase, or >= 75% of its content words."""
    normal = normal_text(answer)
    if not normal:
        return False
    chunk_normal = f" {normal_text(chunk_text)} "
    if f" {normal} " in chunk_normal:
        return True
    needed = content_words(answer)
    if not needed:
        return False
    present = needed & set(chunk_normal.split())
    return len(present) / len(needed) >= 0.75


def candidates_from_reply(value: Any) -> list[Any]:
    if isinstance(value, dict):
        for key in ("questions", "items", "mcqs"):
            if isinstance(value.get(key), list):
                return value[key]
        if "question" in value:
            return [value]
    if isinstance(value, list):
        return value
    raise ValueError("no list of questions in the JSON")


__all__ = [
    "LETTERS",
    "N_OPTIONS",
    "REJECT_REASONS",
    "Candidate",
    "Rejected",
    "answer_supported",
    "candidates_from_reply",
    "check_structure",
    "validate_candidate",
]

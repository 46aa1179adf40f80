"""Retrieved passages fitted into the language model's context window (prompt building).

Where passages + prompt would be longer than ``max_length``, the lowest-ranked passages of that
question are dropped first; the question, its few-shot examples and its choices are never cut.
Token counts use the scorer's own boundaries (:func:`kfr.evaluation.loglikelihood.split_tokens`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from kfr.evaluation.loglikelihood import split_tokens
from kfr.evaluation.prompts import ChoiceRequest

log = logging.getLogger(__name__)

BuildRequests = Callable[..., list[ChoiceRequest]]  # build(passages=...) -> requests


class FittedPrompts(NamedTuple):
    requests: list[ChoiceRequest]
    kept: dict[str, list[str]]  # question id -> the passages that fitted, best first
    stats: dict[str, int]  # questions_with_dropped_chunks, dropped_chunks

    @property
    def used(self) -> dict[str, int]:
        """Question id -> how many of its passages are in its prompt."""
        return {qid: len(texts) for qid, texts in self.kept.items()}


# Tokens that encoding context and choice together can differ by from encoding them apart (a
# merge across the boundary, moved spaces): far from the limit, the cheap count decides.
_BOUNDARY_SLACK = 8


def _too_long(request: ChoiceRequest, tokenizer, max_length: int) -> bool:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    longest = max(count(c) for c in request.continuations)
    if count(request.context) + longest + _BOUNDARY_SLACK <= max_length:
        return False
    # Near the limit: the scorer's own test (kfr.evaluation.loglikelihood), choice by choice.
    pairs = (split_tokens(tokenizer, request.context, c) for c in request.continuations)
    return any(len(ctx) + len(cont) - 1 > max_length for ctx, cont in pairs)


def fit_passages(
    build: BuildRequests,
    passages: Mapping[str, Sequence[str]],
    tokenizer,
    max_length: int,
) -> FittedPrompts:
    """Drop the lowest-ranked passages of questions whose prompt would not fit.

    ``build(passages=...)`` makes the requests of all questions (few-shot examples are chosen
    from the whole set, so requests are rebuilt together); only questions still too long are
    tokenized again after each round.
    """
    kept = {qid: list(texts) for qid, texts in passages.items()}
    requests = build(passages=kept)
    pending = [i for i, r in enumerate(requests) if kept.get(r.question_id)]
    affected: set[str] = set()
    dropped = 0
    while pending:
        pending = [i for i in pending if _too_long(requests[i], tokenizer, max_length)]
        for i in pending:
            qid = requests[i].question_id
            kept[qid].pop()
            affected.add(qid)
            dropped += 1
        if pending:
            requests = build(passages=kept)
            pending = [i for i in pending if kept[requests[i].question_id]]
    if affected:
        log.warning(
            "%d questions had their lowest-ranked chunks dropped (%d in all) to fit max_length=%d",
            len(affected),
            dropped,
            max_length,
        )
    stats = {"questions_with_dropped_chunks": len(affected), "dropped_chunks": dropped}
    return FittedPrompts(requests, kept, stats)

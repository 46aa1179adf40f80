"""The generation run: every chunk's prompts through a text generator, each reply parsed and its
candidates checked (:mod:`~kfr.builders.questions.validation`), asked again when none passes,
duplicates dropped, the rest scored (:mod:`~kfr.builders.questions.specificity`) and the
``keep`` most specific grounded ones kept per chunk, their options shuffled. Every rejected
candidate is counted by reason and kept for the rejects file."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kfr.builders.questions.prompts import build_prompts
from kfr.builders.questions.spec import QuestionSpec
from kfr.builders.questions.specificity import SpecificityIndex
from kfr.builders.questions.validation import (
    REJECT_REASONS,
    Candidate,
    Rejected,
    candidates_from_reply,
    validate_candidate,
)
from kfr.builders.questions.words import normal_text
from kfr.data.schema import Document, Question
from kfr.generation.structured import extract_json, generate_json


@dataclass
class GenerationResult:
    questions: list[Question]
    counts: dict[str, Any]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def shuffled(candidate: Candidate, question_id: str, seed: int) -> tuple[tuple[str, ...], int]:
    order = list(range(len(candidate.choices)))
    random.Random(f"{seed}:{question_id}").shuffle(order)
    return tuple(candidate.choices[i] for i in order), order.index(candidate.answer)


class _RecordingGenerator:
    """Passes requests through and keeps replies with no JSON, for the rejects file."""

    def __init__(self, inner, owner_of: dict[str, str], rejects: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.name = inner.name
        self.owner_of = owner_of  # prompt -> chunk id
        self.rejects = rejects

    def generate(self, prompts: Sequence[str], *, seed: int) -> list[str]:
        replies = self.inner.generate(prompts, seed=seed)
        for prompt, reply in zip(prompts, replies, strict=True):
            try:
                extract_json(reply)
            except ValueError:
                chunk_id = self.owner_of.get(prompt)
                self.rejects.append({"chunk_id": chunk_id, "reason": "no_json", "raw": reply})
        return replies


def generate_questions(
    documents: Sequence[Document],
    generator,
    spec: QuestionSpec,
    *,
    knowledge_base: Sequence[Document] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> GenerationResult:
    """Questions for ``documents``; specificity against ``knowledge_base`` (default: the same)."""
    started = time.perf_counter()
    rejects: list[dict[str, Any]] = []
    reasons: Counter = Counter()
    chunks = [d for d in documents if len(d.text.strip()) >= spec.min_chunk_chars]
    index = SpecificityIndex(knowledge_base if knowledge_base is not None else documents)
    counts: dict[str, Any] = {
        "chunks": len(documents),
        "chunks_too_short": len(documents) - len(chunks),
        "candidates": 0,
        "json": {},
    }
    per_chunk: dict[str, list[Candidate]] = {}
    seen_questions: set[str] = set()
    json_totals: Counter = Counter()
    generation_s = 0.0
    for start in range(0, len(chunks), spec.chunks_per_block):
        block = chunks[start : start + spec.chunks_per_block]
        owners = [d for d in block for _ in build_prompts(d, spec)]
        prompts = [p for d in block for p in build_prompts(d, spec)]

        def parse(i: int, value: Any, owners: list[Document] = owners) -> list[Candidate]:
            """Checked candidates of one reply; ValueError (ask again) if none passes."""
            document = owners[i]
            shown = document.text[: spec.max_chunk_chars]
            valid = []
            for raw in candidates_from_reply(value):
                counts["candidates"] += 1
                try:
                    valid.append(validate_candidate(raw, document.id, shown))
                except Rejected as e:
                    reasons[e.reason] += 1
                    rejects.append({"chunk_id": document.id, "reason": e.reason, "raw": raw})
            if not valid:
                raise ValueError("no usable question in the reply")
            return valid

        t0 = time.perf_counter()
        owner_of = {p: d.id for p, d in zip(prompts, owners, strict=True)}
        answers, stats = generate_json(
            _RecordingGenerator(generator, owner_of, rejects),
            prompts,
            parse,
            retries=spec.json_retries,
            seed=spec.seed * 1_000_003 + start,
        )
        generation_s += time.perf_counter() - t0
        json_totals.update(stats.to_json())
        replies: dict[str, list[Candidate]] = defaultdict(list)
        for document, candidates in zip(owners, answers, strict=True):
            replies[document.id] += candidates or []
        for document in block:
            kept: list[Candidate] = []
            for candidate in replies[document.id]:
                key = normal_text(candidate.question)
                if key in seen_questions:
                    reasons["duplicate_question"] += 1
                    rejects.append(
                        {"chunk_id": document.id, "reason": "duplicate_question",
                         "raw": candidate.to_json()}
                    )  # fmt: skip
                    continue
                seen_questions.add(key)
                support, specificity = index.scores(candidate)
                candidate.support, candidate.specificity = round(support, 4), round(specificity, 4)
                kept.append(candidate)
            per_chunk[document.id] = kept
        done = min(start + spec.chunks_per_block, len(chunks))
        valid = sum(len(v) for v in per_chunk.values())
        progress(f"[{done}/{len(chunks)} chunks] {counts['candidates']} candidates, {valid} valid")

    questions: list[Question] = []
    for document in chunks:
        ranked = sorted(
            enumerate(per_chunk.get(document.id, [])), key=lambda p: (-p[1].specificity, p[0])
        )
        position = 0
        for _, candidate in ranked:
            if candidate.support < spec.min_support:
                reason = "not_grounded"
            elif candidate.specificity <= spec.min_specificity:
                reason = "not_specific"
            elif position >= spec.keep:
                reason = "not_kept"
            else:
                reason = None
            if reason is not None:
                reasons[reason] += 1
                rejects.append(
                    {"chunk_id": document.id, "reason": reason, "raw": candidate.to_json()}
                )
                continue
            question_id = f"{document.id}/q{position}"
            position += 1
            choices, answer = (
                shuffled(candidate, question_id, spec.seed)
                if spec.shuffle
                else (candidate.choices, candidate.answer)
            )
            questions.append(
                Question(
                    id=question_id,
                    question=candidate.question,
                    choices=choices,
                    answer=answer,
                    subject=spec.subject,
                    source_ids=(document.id,),
                )
            )
    counts["json"] = dict(json_totals)
    counts["rejected"] = {reason: reasons.get(reason, 0) for reason in REJECT_REASONS}
    counts["questions"] = len(questions)
    counts["chunks_with_questions"] = len({q.source_ids[0] for q in questions if q.source_ids})
    timings = {
        "generation_s": round(generation_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    return GenerationResult(questions, counts, rejects, timings)


__all__ = ["GenerationResult", "generate_questions", "shuffled"]

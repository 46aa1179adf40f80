"""Multiple-choice questions from any knowledge base, the paper's "current events" recipe.

Ovadia et al. had GPT-4 write four questions per Wikipedia chunk, kept the two most specific and
checked them by hand. Here, for every knowledge-base document (chunk):

1. an LLM (any :class:`~kfr.generation.backend.TextGenerator`: a local transformers model or an
   OpenAI-compatible endpoint) is asked for ``per_chunk`` four-option questions as JSON: in one
   request with instructions (``prompt_style="detailed"``, for capable models), or one question
   per request as the completion of a worked example (``"simple"``, for small local models);
2. every candidate is validated: a question, exactly four distinct non-empty options, one answer
   that names one of them (letter, index or the option's text), the answer supported by the chunk
   by a lexical check (its normalised text occurs in the chunk, or at least 75% of its content
   words do) and not given away by the question itself; failures are counted by reason. A reply
   with no JSON or no valid question is asked again (``json_retries``, new seed), then the chunk
   is counted as failed: a long run never stops for a bad reply;
3. duplicates (same normalised question text anywhere in the set) are dropped;
4. questions whose words mostly do not come from their chunk (``support`` below
   ``min_support``, see below) are dropped as not grounded: they are about something else (a
   small model copying the prompt's example, a question about the world at large); of the rest,
   the ``keep`` most *specific* are kept, if their specificity is above ``min_specificity``;
5. options are shuffled with a generator seeded by the question id (LLMs favour putting the
   answer first), and the question is written with ``source_ids = [chunk id]``;
6. optionally (``leakage_filter``), questions a base model answers correctly without any context
   are dropped: they test what the model knew, not what was injected. At chance level a model
   still answers 1/L of them correctly by luck, so this also drops that share of good questions.

Specificity, the stand-in for the paper's "most specific": with content words T(q) of the question
plus its answer, and IDF weights from the whole knowledge base,
``support(q, c) = sum of idf(t) for t in T(q) found in chunk c / sum of idf(t) for t in T(q)`` and
``specificity(q) = support(q, source chunk) - max over other chunks c of support(q, c)``. It is
high when the question's rare words are in its own chunk and in no other: the question is
grounded in that chunk and cannot be answered from another one (which also makes retrieval
recall against ``source_ids`` meaningful). Generic questions ("What is the main topic?") and
questions about facts repeated across chunks score low. No second LLM call is needed, so the
score is the same whatever backend wrote the question.
"""

from __future__ import annotations

import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kfr.data.schema import Document, Question
from kfr.errors import UserError

TOOL = "kfr.data.question_generation"
PROMPT_VERSION = 1
N_OPTIONS = 4
LETTERS = "ABCD"

PROMPT = """Read the text and write {k} multiple-choice questions about specific facts in it.

Rules:
- Each question must be answerable from the text alone, and must make sense without the text:
  name the person, place or thing it is about; never say "the text" or "the passage".
- Ask about specific details: names, numbers, dates, places, events.
- Give exactly four options. Exactly one is correct and stated in the text; the other three are
  wrong but plausible, of the same kind as the correct one.

Reply with JSON only, in this format:
{{"questions": [{{"question": "...?", "options": ["...", "...", "...", "..."], "answer": "A"}}]}}

Title: {title}
Text:
\"\"\"
{text}
\"\"\""""

# For small local models, which rarely follow the instructions above: one question per request,
# as the completion of a worked example (asked ``per_chunk`` times per chunk, different samples).
# A model that copies the example is caught by the checks (its answer is not in the chunk).
SIMPLE_PROMPT = """Text: "Mount Kenya is the highest mountain in Kenya. Its summit, Batian, is \
5,199 metres high."
Question as JSON: {{"question": "How high is Batian, the summit of Mount Kenya?", "options": \
["4,985 metres", "5,199 metres", "5,895 metres", "3,500 metres"], "answer": "B"}}

Text: "{text}"
Question as JSON:"""
PROMPT_STYLES = ("detailed", "simple")

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    (
        "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and",
        "any", "are", "as", "at", "be", "because", "been", "before", "being", "below",
        "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down",
        "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
        "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if",
        "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my",
        "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other",
        "our", "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such",
        "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there",
        "these", "they", "this", "those", "through", "to", "too", "under", "until", "up",
        "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
        "why", "will", "with", "would", "you", "your", "yours", "whose", "text", "passage",
        "following", "according", "called", "known", "name", "named",
    )
)  # fmt: skip
# Reasons a candidate is rejected, in the order they are checked (the card lists all of them).
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


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS}


def _normal(text: str) -> str:
    return " ".join(words(text))


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class QuestionSpec:
    per_chunk: int = 4  # questions asked of the LLM per chunk (the paper: 4)
    keep: int = 2  # most specific kept per chunk (the paper: 2)
    min_specificity: float = 0.0
    min_support: float = 0.4  # share of the question's word weight found in its own chunk
    shuffle: bool = True  # reorder options, seeded by question id
    seed: int = 0
    json_retries: int = 2  # asks again when a reply holds no usable question
    max_chunk_chars: int = 4000  # longer chunks are cut (the LLM sees, and is checked on, the cut)
    min_chunk_chars: int = 100  # shorter chunks are skipped: too little to ask about
    chunks_per_block: int = 16  # progress and seeds advance per block of chunks
    subject: str | None = None  # written into every question (per-subject accuracy)
    prompt_style: str = "detailed"  # detailed: PROMPT (k per request) | simple: SIMPLE_PROMPT

    def __post_init__(self) -> None:
        if self.prompt_style not in PROMPT_STYLES:
            raise UserError(
                f"must be one of {', '.join(PROMPT_STYLES)}, got '{self.prompt_style}'",
                field="prompt_style",
            )
        if self.per_chunk < 1:
            raise UserError(f"must be at least 1, got {self.per_chunk}", field="per_chunk")
        if not 1 <= self.keep <= self.per_chunk:
            raise UserError(
                f"must be between 1 and per_chunk ({self.per_chunk}), got {self.keep}",
                field="keep",
            )
        if self.json_retries < 0:
            raise UserError(f"must be at least 0, got {self.json_retries}", field="json_retries")
        if self.chunks_per_block < 1:
            raise UserError(f"must be at least 1, got {self.chunks_per_block}", field="block")


def build_prompts(document: Document, spec: QuestionSpec) -> list[str]:
    """The requests for one chunk: one for ``per_chunk`` questions, or ``per_chunk`` for one."""
    text = document.text[: spec.max_chunk_chars].strip()
    if spec.prompt_style == "simple":
        return [SIMPLE_PROMPT.format(text=" ".join(text.split()))] * spec.per_chunk
    return [PROMPT.format(k=spec.per_chunk, title=document.title or document.id, text=text)]


# --------------------------------------------------------------------------- validation


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


class _Rejected(ValueError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _answer_index(value: Any, choices: Sequence[str]) -> int:
    if isinstance(value, bool):
        raise _Rejected("answer_not_in_choices")
    if isinstance(value, int):
        if 0 <= value < len(choices):
            return value
        raise _Rejected("answer_not_in_choices")
    if isinstance(value, str):
        text = value.strip()
        letter = text.rstrip(".):").strip().upper()
        if len(letter) == 1 and letter in LETTERS[: len(choices)]:
            return LETTERS.index(letter)
        normal = _normal(text)
        matches = [i for i, choice in enumerate(choices) if _normal(choice) == normal]
        # "B. Paris" or "Paris": an option's own text, possibly after its letter
        if not matches and len(text) > 2 and text[1] in ".):" and text[0].upper() in LETTERS:
            return _answer_index(text[0], choices)
        if len(matches) == 1:
            return matches[0]
    raise _Rejected("answer_not_in_choices")


_OPTION_LABEL = re.compile(r"^\s*(?:[A-Da-d][.):]|\([A-Da-d]\))\s+")


def check_structure(raw: Any) -> tuple[str, tuple[str, ...], int]:
    """(question, choices, answer) of a well-formed candidate, else ValueError with a reason."""
    if not isinstance(raw, dict):
        raise _Rejected("malformed")
    question = raw.get("question")
    options = raw.get("options", raw.get("choices"))
    if not isinstance(question, str) or len(question.strip()) < 10 or len(question) > 500:
        raise _Rejected("malformed")
    if not isinstance(options, list) or len(options) != N_OPTIONS:
        raise _Rejected("malformed")
    if not all(isinstance(o, str | int | float) and str(o).strip() for o in options):
        raise _Rejected("malformed")
    # Options sometimes come labelled ("A. Paris"): the label is not part of the option.
    choices = tuple(_OPTION_LABEL.sub("", str(o)).strip() for o in options)
    if "answer" not in raw:
        raise _Rejected("malformed")
    answer = _answer_index(raw["answer"], choices)
    normal_choices = [_normal(c) for c in choices]
    if len(set(normal_choices)) != len(choices) or not all(normal_choices):
        raise _Rejected("duplicate_choices")
    return " ".join(question.split()), choices, answer


def validate_candidate(raw: Any, chunk_id: str, chunk_text: str) -> Candidate:
    """A checked candidate, or ValueError with ``reason`` (one of REJECT_REASONS)."""
    question, choices, answer = check_structure(raw)
    if not answer_supported(choices[answer], chunk_text):
        raise _Rejected("unsupported_answer")
    answer_text = _normal(choices[answer])
    if len(answer_text) > 3 and f" {answer_text} " in f" {_normal(question)} ":
        raise _Rejected("answer_in_question")
    return Candidate(chunk_id, question, choices, answer)


def answer_supported(answer: str, chunk_text: str) -> bool:
    """Whether ``chunk_text`` states ``answer``: as a phrase, or >= 75% of its content words."""
    normal = _normal(answer)
    if not normal:
        return False
    chunk_normal = f" {_normal(chunk_text)} "
    if f" {normal} " in chunk_normal:
        return True
    needed = content_words(answer)
    if not needed:
        return False
    present = needed & set(chunk_normal.split())
    return len(present) / len(needed) >= 0.75


# --------------------------------------------------------------------------- specificity


class SpecificityIndex:
    """IDF-weighted word overlap of a question with every chunk of the knowledge base."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self.n = len(documents)
        self.words = {d.id: content_words(d.text) for d in documents}
        postings: dict[str, list[str]] = defaultdict(list)
        for doc_id, doc_words in self.words.items():
            for word in doc_words:
                postings[word].append(doc_id)
        self.postings = postings

    def idf(self, word: str) -> float:
        return math.log((1 + self.n) / (1 + len(self.postings.get(word, ())))) + 1.0

    def scores(self, candidate: Candidate) -> tuple[float, float]:
        """(support in its own chunk, specificity); see the module docstring."""
        terms = content_words(candidate.question + " " + candidate.choices[candidate.answer])
        if not terms:
            return 0.0, -1.0
        weights = {t: self.idf(t) for t in terms}
        total = sum(weights.values())
        overlap: Counter = Counter()
        for term, weight in weights.items():
            for doc_id in self.postings.get(term, ()):
                overlap[doc_id] += weight
        own = overlap.pop(candidate.chunk_id, 0.0) / total
        best_other = max(overlap.values(), default=0.0) / total
        return own, own - best_other

    def specificity(self, candidate: Candidate) -> float:
        return self.scores(candidate)[1]


# --------------------------------------------------------------------------- generation


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


def _candidates_from_json(value: Any) -> list[Any]:
    if isinstance(value, dict):
        for key in ("questions", "items", "mcqs"):
            if isinstance(value.get(key), list):
                return value[key]
        if "question" in value:
            return [value]
    if isinstance(value, list):
        return value
    raise ValueError("no list of questions in the JSON")


class _RecordingGenerator:
    """Passes requests through and keeps replies with no JSON, for the rejects file."""

    def __init__(self, inner, owner_of: dict[str, str], rejects: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.name = inner.name
        self.owner_of = owner_of  # prompt -> chunk id
        self.rejects = rejects

    def generate(self, prompts: Sequence[str], *, seed: int) -> list[str]:
        from kfr.generation.structured import extract_json

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
    from kfr.generation.structured import generate_json

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
            for raw in _candidates_from_json(value):
                counts["candidates"] += 1
                try:
                    valid.append(validate_candidate(raw, document.id, shown))
                except _Rejected as e:
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
                key = _normal(candidate.question)
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


def drop_known_without_context(
    result: GenerationResult, lm, *, batch_size: int = 8
) -> GenerationResult:
    """Drop the questions ``lm`` answers correctly with no context (cloze, 0-shot, ``acc``)."""
    from kfr.config import PromptStyle
    from kfr.evaluation.loglikelihood import score_requests
    from kfr.evaluation.metrics import predict
    from kfr.evaluation.prompts import build_requests

    if not result.questions:
        return result
    t0 = time.perf_counter()
    requests = build_requests(result.questions, PromptStyle.cloze)
    scores, _ = score_requests(
        lm.model,
        lm.tokenizer,
        requests,
        max_length=lm.max_length,
        batch_size=batch_size,
        device=lm.device,
        progress=False,
    )
    predictions = predict(result.questions, scores, [r.choice_lengths for r in requests])
    kept = [p.question for p in predictions if not p.correct]
    known = [p for p in predictions if p.correct]
    result.counts["rejected"]["known_without_context"] = len(known)
    result.counts["questions"] = len(kept)
    result.counts["chunks_with_questions"] = len({q.source_ids[0] for q in kept if q.source_ids})
    result.counts["leakage_filter"] = {"model": lm.name, "scored": len(predictions)}
    for p in known:
        result.rejects.append(
            {"chunk_id": (p.question.source_ids or ("",))[0], "reason": "known_without_context",
             "raw": p.question.to_json()}
        )  # fmt: skip
    result.questions = kept
    result.timings["leakage_filter_s"] = round(time.perf_counter() - t0, 2)
    return result


# --------------------------------------------------------------------------- command line

PROG = "kfr-questions"


def main(argv: list[str] | None = None) -> int:
    import argparse

    from kfr.data.cards import read_card, sha256_file, write_card
    from kfr.data.readers import read_knowledge_base, write_questions_jsonl
    from kfr.errors import USER_ERROR_EXIT_CODE
    from kfr.generation.backends import (
        add_backend_arguments,
        generator_from_args,
        model_config_by_name,
    )
    from kfr.storage import atomic_write_jsonl

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate four-option questions from a knowledge base with an LLM "
        "(the paper's current-events recipe). Paraphrases of a knowledge base are made by the "
        "fine-tuning tools, with the same backend flags.",
    )
    parser.add_argument("--knowledge", type=Path, required=True, help="knowledge base (.jsonl/dir)")
    parser.add_argument("--out", type=Path, required=True, help="questions to write (.jsonl)")
    d = QuestionSpec()
    parser.add_argument("--per-chunk", type=int, default=d.per_chunk, help="asked per chunk")
    parser.add_argument("--keep", type=int, default=d.keep, help="most specific kept per chunk")
    parser.add_argument("--min-specificity", type=float, default=d.min_specificity)
    parser.add_argument(
        "--min-support",
        type=float,
        default=d.min_support,
        help="least share of a question's (IDF-weighted) words found in its own chunk",
    )
    parser.add_argument("--limit-chunks", type=int, help="use only the first N chunks")
    parser.add_argument("--subject", help="subject of every question (default: the KB's topic)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-shuffle", action="store_true", help="keep the LLM's option order")
    parser.add_argument("--json-retries", type=int, default=d.json_retries)
    parser.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default=d.prompt_style,
        help="detailed: instructions, per-chunk questions per request (strong models); "
        "simple: one question per request after a worked example (small local models)",
    )
    parser.add_argument("--max-chunk-chars", type=int, default=d.max_chunk_chars)
    parser.add_argument("--min-chunk-chars", type=int, default=d.min_chunk_chars)
    parser.add_argument(
        "--leakage-filter",
        action="store_true",
        help="drop questions a base model answers correctly without context",
    )
    parser.add_argument(
        "--leakage-model",
        help="kfr model config for the leakage filter (default: the local generator's model, "
        "else smollm2_135m)",
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        help="write rejected candidates, and replies with no JSON, here (.jsonl) for inspection",
    )
    parser.add_argument("--cache-dir", type=Path, help="kfr cache (models, endpoint replies)")
    parser.add_argument("--quiet", action="store_true")
    add_backend_arguments(parser, max_new_tokens=512, temperature=0.7)
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        if args.out.suffix.lower() != ".jsonl":
            raise UserError("the questions file must be .jsonl", path=args.out, field="--out")
        documents = read_knowledge_base(args.knowledge)
        kb_card = read_card(args.knowledge) if args.knowledge.is_file() else None
        subject = args.subject
        if subject is None and kb_card is not None:
            subject = (kb_card.get("settings") or {}).get("topic")
        spec = QuestionSpec(
            per_chunk=args.per_chunk,
            keep=args.keep,
            min_specificity=args.min_specificity,
            min_support=args.min_support,
            shuffle=not args.no_shuffle,
            seed=args.seed,
            json_retries=args.json_retries,
            max_chunk_chars=args.max_chunk_chars,
            min_chunk_chars=args.min_chunk_chars,
            subject=subject,
            prompt_style=args.prompt_style,
        )
        chosen = documents[: args.limit_chunks] if args.limit_chunks else documents
        cache_dir = args.cache_dir or _default_cache_dir()
        from kfr.console import quiet_libraries

        quiet_libraries()  # no per-load progress bars from transformers
        t0 = time.perf_counter()
        generator, backend = generator_from_args(
            args, cache_dir=cache_dir, reply_cache=Path(cache_dir) / "generation" / "replies"
        )
        load_s = time.perf_counter() - t0
        say(f"{backend['backend']} backend, model {backend['model']} ({load_s:.1f} s to load)")
        result = generate_questions(chosen, generator, spec, knowledge_base=documents, progress=say)
        result.timings["load_backend_s"] = round(load_s, 2)
        if args.leakage_filter:
            lm = getattr(generator, "lm", None)
            if args.leakage_model or lm is None:
                from kfr.models import load_model

                name = args.leakage_model or "smollm2_135m"
                lm = load_model(model_config_by_name(name), cache_dir)
            result = drop_known_without_context(result, lm)
        if args.rejects:  # written even when nothing passes: it is how one finds out why
            atomic_write_jsonl(args.rejects, result.rejects)
        if not result.questions:
            raise UserError(
                f"no question passed the checks ({_summary(result.counts)}); nothing written. "
                "Use --rejects FILE to see why, or a stronger model"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_questions_jsonl(args.out, result.questions)
        extra = []
        if args.rejects:
            extra.append(args.rejects)
        write_card(
            args.out,
            kind="questions",
            tool=TOOL,
            source={
                "knowledge": str(args.knowledge),
                "knowledge_sha256": (
                    sha256_file(args.knowledge) if args.knowledge.is_file() else None
                ),
                "knowledge_card": kb_card.get("card_path") if kb_card else None,
                "generator": backend,
            },
            settings={**asdict(spec), "limit_chunks": args.limit_chunks,
                      "leakage_filter": args.leakage_filter, "prompt_version": PROMPT_VERSION},
            counts=result.counts,
            extra_files=extra,
            timings=result.timings,
            prompt=SIMPLE_PROMPT if spec.prompt_style == "simple" else PROMPT,
        )  # fmt: skip
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    print(
        f"wrote {len(result.questions)} questions from {result.counts['chunks_with_questions']} "
        f"of {len(chosen)} chunks to {args.out} ({_summary(result.counts)}; "
        f"{result.timings['total_s']} s)"
    )
    return 0


def _summary(counts: dict[str, Any]) -> str:
    rejected = ", ".join(f"{n} {r}" for r, n in counts.get("rejected", {}).items() if n)
    failed = counts.get("json", {}).get("failed", 0)
    return f"{counts.get('candidates', 0)} candidates; {failed} requests without a usable reply" + (
        f"; rejected: {rejected}" if rejected else ""
    )


def _default_cache_dir() -> Path:
    import os

    from platformdirs import user_cache_dir

    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))


if __name__ == "__main__":
    sys.exit(main())

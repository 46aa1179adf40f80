"""The training question-answer pairs of the QA methods (qa_ft, distill, raft), and where they
come from.

Pairs are written from the knowledge base only, never from the evaluation questions. Sources
(``qa.source``):

- ``template``: the novel_facts generator's own training phrasings of every fact
  (:func:`kfr.data.novel_facts.training_pairs`, ``qa.per_fact`` per fact, seeded by ``seed``);
  forward only (person -> value), or with ``qa.directions=both`` also reverse questions (a value
  that identifies one person -> that person);
- ``llm``: an instruction-tuned model (``qa.generator``) writes pairs from each document; JSON
  answers are validated (the answer a short phrase found in the document, not given away by the
  question) and retried (:mod:`kfr.generation`), then cached per settings under
  ``<cache>/qa/<model>-<key>/`` (``qa.jsonl``, ``stats.json`` and a card);
- ``file``: the user's JSONL (:mod:`kfr.data.qa_file`); every doc_id must name a knowledge-base
  document.

Whatever the source, the pairs are then measured against the evaluation questions, the direct
ones and every probe family (``data.probes``): the largest word 5-gram overlap
(:mod:`kfr.data.overlap`) with each is reported in the stats (``max_5gram_overlap``,
``max_5gram_overlap_probes``), and above ``qa.max_overlap`` it is an error naming the pair (its
file and line when it was read from one) and, for a probe, the family. The evaluation questions
are read for that measurement and nothing else.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import GeneratorConfig, KfrConfig, QaConfig, QaDirections, QaSource
from kfr.core.storage import atomic_write_json, build_directory_once
from kfr.data.cards import write_card
from kfr.data.loading import EvalData
from kfr.data.novel_facts import training_pairs
from kfr.data.overlap import Overlap, max_overlap
from kfr.data.qa_file import read_qa_pairs, write_qa_pairs_jsonl
from kfr.data.schema import Document, QaPair, Question
from kfr.finetune.keys import content_digest, model_identity
from kfr.generation import SamplingSettings, TextGenerator, TransformersGenerator, generate_json

log = logging.getLogger(__name__)

# Bump PROMPT_VERSION when the instruction, the prefill or the validation rules change: cached
# pairs are keyed on it.
PROMPT_VERSION = 1
QA_INSTRUCTION = (
    "Read the text below and write {n} questions that it answers, each with its answer. Ask "
    "about different facts. Each question must make sense without the text: name the person, "
    'place or thing it is about, and never say "the text" or "the passage". Each answer must '
    "be a short phrase copied exactly from the text, and must not appear in its question. "
    'Return a JSON object with one key, "pairs", holding a list of {n} objects, each with the '
    'keys "question" and "answer".\n\nText:\n{text}'
)
# The answer is started for the model: small instruction-tuned models then write the JSON.
ANSWER_PREFILL = '{"pairs": [{"question": "'
# A "short phrase": longer answers are sentences copied from the document, not facts.
MAX_ANSWER_WORDS = 12
REJECT_REASONS = ("malformed", "answer_not_in_document", "answer_in_question", "answer_too_long")
LLM_FILE = "qa.jsonl"
LLM_STATS = "stats.json"
TOOL = "kfr.finetune.qa_pairs"


@dataclass
class TrainingPairs:
    pairs: list[QaPair]  # document by document, in knowledge-base order
    stats: dict[str, Any]  # what results report: source, counts, the largest overlap


def qa_prompt(text: str, n: int) -> str:
    return QA_INSTRUCTION.format(n=n, text=text)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def qa_parser(
    document: Document, n: int, rejected: Counter[str]
) -> Callable[[Any], list[tuple[str, str]]]:
    """Validates one JSON answer: up to ``n`` ``(question, answer)`` pairs about ``document``.

    Every pair dropped is counted in ``rejected`` by reason; ValueError when none is usable (so
    :func:`~kfr.generation.generate_json` asks again).
    """
    text = _normalise(document.text).casefold()

    def parse(value: Any) -> list[tuple[str, str]]:
        items = value.get("pairs") if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise ValueError('expected {"pairs": [...]}')
        usable: list[tuple[str, str]] = []
        for item in items:
            question = item.get("question") if isinstance(item, dict) else None
            answer = item.get("answer") if isinstance(item, dict) else None
            if not isinstance(question, str) or not isinstance(answer, str):
                rejected["malformed"] += 1
                continue
            question, answer = _normalise(question), _normalise(answer).strip(" .")
            reason = None
            if not question or not answer:
                reason = "malformed"
            elif len(answer.split()) > MAX_ANSWER_WORDS:
                reason = "answer_too_long"
            elif answer.casefold() not in text:  # made up, or not copied from the document
                reason = "answer_not_in_document"
            elif answer.casefold() in question.casefold():  # the question gives it away
                reason = "answer_in_question"
            if reason:
                rejected[reason] += 1
            elif question.casefold() not in {q.casefold() for q, _ in usable}:
                usable.append((question, answer))
        if not usable:
            raise ValueError("no usable question-answer pair in the answer")
        return usable[:n]

    return parse


def generate_qa_pairs(
    generator: TextGenerator,
    documents: Sequence[Document],
    *,
    per_request: int,
    retries: int,
    seed: int,
) -> tuple[list[QaPair], dict[str, Any]]:
    """Up to ``per_request`` pairs per document (one prompt each, retried when none is usable);
    ids ``{doc_id}-q{j}``."""
    rejected: Counter[str] = Counter()
    parsers = [qa_parser(d, per_request, rejected) for d in documents]
    results, stats = generate_json(
        generator,
        [qa_prompt(d.text, per_request) for d in documents],
        lambda index, value: parsers[index](value),
        retries=retries,
        seed=seed,
        prefill=ANSWER_PREFILL,
    )
    pairs: list[QaPair] = []
    for document, found in zip(documents, results, strict=True):
        pairs += [
            QaPair(id=f"{document.id}-q{j}", doc_id=document.id, question=q, answer=a)
            for j, (q, a) in enumerate(found or [])
        ]
    return pairs, {**stats.to_json(), "rejected_pairs": {r: rejected[r] for r in REJECT_REASONS}}


# --------------------------------------------------------------------------- sources


def _generator_settings(gen: GeneratorConfig) -> SamplingSettings:
    return SamplingSettings.from_config(gen, "qa.generator")


def llm_qa_pairs(
    qa: QaConfig,
    documents: Sequence[Document],
    seed: int,
    cache_dir: str | Path,
    *,
    generator: TextGenerator | None = None,
) -> tuple[list[QaPair], dict[str, Any]]:
    """Generated pairs, from the cache when these settings already made them."""
    gen = qa.generator
    if gen.per_request < 1 or gen.retries < 0:
        raise UserError("per_request must be >= 1, retries >= 0", field="qa.generator")
    settings = {
        "model": model_identity(gen.model, keep_dtype=True),
        # A writer passed in (an OpenAI-compatible endpoint, a test's fake) is not the model
        # config's: its name keeps its pairs apart from the configured model's.
        "writer": None if generator is None else generator.name,
        "sampling": _generator_settings(gen).to_json(),
        "per_request": gen.per_request,
        "retries": gen.retries,
        "seed": seed,
        "prompt": [PROMPT_VERSION, QA_INSTRUCTION, ANSWER_PREFILL, MAX_ANSWER_WORDS],
    }
    documents_digest = content_digest([[d.id, d.text] for d in documents])
    key = content_digest({**settings, "documents": documents_digest})
    target = Path(cache_dir) / "qa" / f"{gen.model.name}-{key}"

    def build(out_dir: Path) -> None:
        writer = generator or TransformersGenerator.from_config(
            gen.model, cache_dir, _generator_settings(gen)
        )
        log.info("Writing training questions for %d documents with %s", len(documents), writer.name)
        pairs, stats = generate_qa_pairs(
            writer, documents, per_request=gen.per_request, retries=gen.retries, seed=seed
        )
        if not pairs:  # not cached: an empty set would only fail again on every later run
            raise UserError(
                f"{writer.name} wrote no usable question-answer pair for {len(documents)} "
                f"documents ({stats['failed']} prompts failed): use a larger instruction-tuned "
                "model (qa.generator.model=...) or qa=file",
                field="qa.generator",
            )
        write_qa_pairs_jsonl(out_dir / LLM_FILE, pairs)
        atomic_write_json(out_dir / LLM_STATS, stats)
        write_card(
            out_dir / LLM_FILE,
            kind="qa_pairs",
            tool=TOOL,
            source={"generator": writer.name, "documents": len(documents)},
            settings={**settings, "documents_digest": documents_digest},
            counts={"pairs": len(pairs), **stats},
            prompt=QA_INSTRUCTION,
        )

    build_directory_once(target, build)
    pairs = read_qa_pairs(target / LLM_FILE)
    stats = json.loads((target / LLM_STATS).read_text(encoding="utf-8"))
    return pairs, {"cache": str(target), "generation": stats}


def _file_pairs(qa: QaConfig, documents: Sequence[Document]) -> tuple[list[QaPair], dict]:
    if not qa.file:
        raise UserError("qa.source=file needs qa.file=PATH", field="qa.file")
    path = Path(qa.file).expanduser()
    return read_qa_pairs(path, known_doc_ids={d.id for d in documents}), {"file": str(path)}


# --------------------------------------------------------------------------- entry point


def _checked_overlap(
    pairs: Sequence[QaPair], questions: Sequence[Question], limit: float, what: str
) -> Overlap:
    """The largest overlap of the training questions with ``questions``; over ``limit``, an
    error naming both questions (and the training pair's file:line when read from a file)."""
    worst = max_overlap([p.question for p in pairs], [q.question for q in questions])
    if worst.value > limit:
        pair = next(p for p in pairs if p.question == worst.training)
        where = pair.where
        raise UserError(
            f"training question {pair.id!r} ({worst.training!r}) shares {worst.value:.0%} of the "
            f"word 5-grams of {what} {worst.evaluation!r}, more than qa.max_overlap={limit}: "
            "training questions must not reword the evaluation set",
            path=None if where is None else where.path,
            line=None if where is None else where.line,
            field="qa.max_overlap",
        )
    return worst


def training_qa_pairs(
    cfg: KfrConfig,
    data: EvalData,
    cache_dir: str | Path,
    *,
    generator: TextGenerator | None = None,
) -> TrainingPairs:
    """The training pairs of ``cfg.qa.source``, checked against the evaluation questions."""
    documents = data.documents or []
    if not documents:
        raise UserError(
            "training questions are written from a knowledge base: set data.knowledge=PATH",
            field="data.knowledge",
        )
    qa = cfg.qa
    if not 0.0 <= qa.max_overlap <= 1.0:
        raise UserError(f"must be between 0 and 1, got {qa.max_overlap}", field="qa.max_overlap")
    source = QaSource(qa.source)
    directions = QaDirections(qa.directions)
    if directions != QaDirections.forward and source != QaSource.template:
        raise UserError(
            f"directions={directions.value} needs qa=template (the generator writes the reverse "
            f"questions); qa={source.value} trains its questions as they are: use "
            "qa.directions=forward",
            field="qa.directions",
        )
    extra: dict[str, Any]
    if source == QaSource.template:
        pairs = training_pairs(documents, qa.per_fact, cfg.seed, directions.value)
        extra = {"per_fact": qa.per_fact, "directions": directions.value}
    elif source == QaSource.file:
        pairs, extra = _file_pairs(qa, documents)
    else:
        pairs, extra = llm_qa_pairs(qa, documents, cfg.seed, cache_dir, generator=generator)
    if not pairs:
        raise UserError(f"no training question-answer pairs from qa={source.value}", field="qa")

    # The only use of the evaluation questions: how closely the training questions reword them.
    worst = _checked_overlap(pairs, data.questions, qa.max_overlap, "evaluation question")
    worst_probe = Overlap(0.0, "", "")
    for family, probes in data.probes.items():
        found = _checked_overlap(pairs, probes, qa.max_overlap, f"{family} probe question")
        if found.value > worst_probe.value:
            worst_probe = found
    stats: dict[str, Any] = {
        "source": source.value,
        "pairs": len(pairs),
        "documents": len(documents),
        "documents_with_pairs": len({p.doc_id for p in pairs}),
        "max_5gram_overlap": worst.value,
        # null when no training question shares a 5-gram with (or equals) any evaluation one
        "max_overlap_pair": [worst.training, worst.evaluation] if worst.value else None,
        # the same against the probe questions (null when the data has none)
        "max_5gram_overlap_probes": worst_probe.value if data.probes else None,
        "max_overlap_probe_pair": (
            [worst_probe.training, worst_probe.evaluation] if worst_probe.value else None
        ),
        **extra,
    }
    log.info(
        "%d training questions (qa=%s), largest 5-gram overlap with the evaluation set %.2f",
        len(pairs),
        source.value,
        worst.value,
    )
    return TrainingPairs(pairs, stats)


__all__ = [
    "PROMPT_VERSION",
    "TrainingPairs",
    "generate_qa_pairs",
    "llm_qa_pairs",
    "qa_parser",
    "qa_prompt",
    "training_qa_pairs",
]

"""Resolve a data config to the question set (and knowledge base) one cell evaluates.

``data.questions`` and ``data.fewshot`` take a file path or ``hf://<dataset>``; a config with a
``novel_facts`` block generates the synthetic set into the cache first. ``hf://cais/mmlu`` is read
by :mod:`kfr.data.mmlu` (subjects in ``data.hf_name``; a local copy when ``data.mmlu_dir`` is set).
A dataset card beside the questions file (:mod:`kfr.data.cards`) is recorded with the results.

The probe questions (:mod:`kfr.data.probes`) come with the generated novel_facts set from version
2 on (``EvalData.probes``, every family cut by ``data.limit`` like the direct questions); any
other data offers none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import DataConfig
from kfr.data.cards import find_card
from kfr.data.mmlu import is_mmlu_source, load_mmlu, parse_subjects, write_mmlu_card
from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts
from kfr.data.probes import FAMILIES_BY_VERSION, probe_file_name
from kfr.data.readers import (
    load_hf_questions,
    read_knowledge_base,
    read_questions,
    validate_source_ids,
)
from kfr.data.schema import Document, Question

HF_PREFIX = "hf://"

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    questions: list[Question]
    fewshot_pool: list[Question] | None  # None: draw examples from `questions` themselves
    documents: list[Document] | None
    questions_source: str
    knowledge_source: str | None
    data_dir: Path | None  # generated data sets: where their files (and card) live
    card: str | None = None  # the questions' dataset card (kfr.data.cards), if there is one
    origin: dict[str, Any] | None = None  # hub or local-copy provenance (MMLU)
    # family -> probe questions (kfr.data.probes): generated novel_facts version >= 2 only
    probes: dict[str, list[Question]] = field(default_factory=dict)


def _read_question_source(
    source: str, cfg: DataConfig, split: str
) -> tuple[list[Question], dict[str, Any] | None]:
    if is_mmlu_source(source):
        loaded = load_mmlu(parse_subjects(cfg.hf_name), split, local_dir=cfg.mmlu_dir)
        return loaded.questions, loaded.origin
    if source.startswith(HF_PREFIX):
        return load_hf_questions(source[len(HF_PREFIX) :], cfg.hf_name, split), None
    return read_questions(source), None


def _cut(questions: list[Question], limit: int | None, what: str) -> list[Question]:
    if limit is None:
        return questions
    if limit < 1:  # the schema's range; kept for DataConfigs made in code
        raise UserError(f"must be at least 1, got {limit}", field="data.limit")
    if limit > len(questions):
        # A cap, not a request for more: the whole set is scored (results say n).
        log.info(
            "data.limit=%d: %s has only %d questions, scoring all of them",
            limit,
            what,
            len(questions),
        )
    return questions[:limit]


def load_eval_data(cfg: DataConfig, cache_dir: str | Path, *, need_knowledge: bool) -> EvalData:
    data_dir = None
    probe_paths: dict[str, Path] = {}
    questions_source, knowledge_source = cfg.questions, cfg.knowledge
    if cfg.novel_facts is not None:
        spec = NovelFactsSpec(
            n_entities=cfg.novel_facts.n_entities,
            seed=cfg.novel_facts.seed,
            n_paraphrases=cfg.novel_facts.n_paraphrases,
            version=cfg.novel_facts.version,
        )
        data_dir = ensure_novel_facts(spec, Path(cache_dir) / "data")
        if spec.version >= 2:
            families = FAMILIES_BY_VERSION[spec.version]
            probe_paths = {f: data_dir / probe_file_name(f) for f in families}
            # A family a tiny knowledge base cannot produce has no file.
            probe_paths = {f: path for f, path in probe_paths.items() if path.exists()}
        questions_source = questions_source or str(data_dir / "questions.jsonl")
        knowledge_source = knowledge_source or str(data_dir / "knowledge.jsonl")
    if not questions_source:
        raise UserError(
            "no questions given: set data.questions=PATH (or hf://DATASET)", field="data.questions"
        )
    if need_knowledge and not knowledge_source:
        raise UserError(
            "this method needs a knowledge base: set data.knowledge=PATH", field="data.knowledge"
        )
    questions, origin = _read_question_source(questions_source, cfg, cfg.hf_split)
    whole_set = questions
    questions = _cut(questions, cfg.limit, "the set")
    probes = {
        family: _cut(read_questions(path), cfg.limit, f"the {family} probes")
        for family, path in probe_paths.items()
    }
    fewshot_pool, fewshot_origin = None, None
    if cfg.fewshot:
        fewshot_pool, fewshot_origin = _read_question_source(cfg.fewshot, cfg, cfg.hf_fewshot_split)
    documents = None
    if knowledge_source and (need_knowledge or probes or any(q.source_ids for q in questions)):
        documents = read_knowledge_base(knowledge_source)
        validate_source_ids(questions, documents, questions_source)
        for family, path in probe_paths.items():
            validate_source_ids(probes[family], documents, path)
    card = None if questions_source.startswith(HF_PREFIX) else find_card(questions_source)
    if origin is not None:  # MMLU: no file of ours to find a card beside, so write one
        card = write_mmlu_card(cache_dir, whole_set, origin, fewshot_pool, fewshot_origin)
    return EvalData(
        questions,
        fewshot_pool,
        documents,
        questions_source,
        knowledge_source,
        data_dir,
        card=str(card) if card else None,
        origin=origin,
        probes=probes,
    )

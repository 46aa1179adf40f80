"""The scaling benchmark's knowledge bases: novel-facts people, every name once.

Biographies made with the generator's own building blocks (:mod:`kfr.data.novel_facts`); the
knowledge base of N documents is the first N of one fixed list shuffled by the seed, so each size
is a prefix of the next and every name is unique (``benchmarks/scaling.py`` says why).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from kfr.data import novel_facts as nf
from kfr.data.knowledge_base import write_knowledge_base_jsonl
from kfr.data.questions import write_questions_jsonl
from kfr.data.schema import Document, Question

QUESTIONS_PER_PERSON = len(nf.ATTRIBUTES)
DOC_WIDTH = 6  # person-000001: the same id for a person at every size


def all_names(seed: int) -> list[str]:
    """Every name the generator's syllables make, each once, in an order shuffled by ``seed``."""
    names = dict.fromkeys(
        f"{onset}{ending} {stem}{last}"
        for onset in nf.FIRST_NAME_ONSETS
        for ending in nf.FIRST_NAME_ENDINGS
        for stem in nf.LAST_NAME_STEMS
        for last in nf.LAST_NAME_ENDINGS
    )
    shuffled = list(names)
    random.Random(f"scaling/{seed}").shuffle(shuffled)
    return shuffled


MAX_DOCS = len(all_names(0))


@dataclass
class People:
    """The first ``n`` people of the fixed list: documents and their questions."""

    documents: list[Document]
    questions: list[list[Question]]  # per person, the 6 questions in ATTRIBUTES order


def make_people(n: int, seed: int) -> People:
    if not 1 <= n <= MAX_DOCS:
        raise ValueError(f"between 1 and {MAX_DOCS} documents, got {n}")
    documents, questions = [], []
    for i, name in enumerate(all_names(seed)[:n]):
        rng = random.Random(f"scaling/{seed}/{i}")
        entity = nf._Entity(
            doc_id=f"person-{i + 1:0{DOC_WIDTH}d}",
            name=name,
            facts=tuple((a, rng.choice(nf.DOMAINS[a])) for a in nf.ATTRIBUTES),
        )
        documents.append(nf._document(entity))
        questions.append(nf._questions(rng, entity))
    return People(documents, questions)


def first_questions(people: People, n: int) -> list[Question]:
    return [q for per_person in people.questions for q in per_person][:n]


@dataclass
class KnowledgeFiles:
    knowledge: Path
    questions: Path
    ft_knowledge: Path
    ft_questions: Path
    docs: int
    ft_docs: int


def write_knowledge(
    out: Path, people: People, docs: int, questions: int, ft_docs: int
) -> KnowledgeFiles:
    """The first ``docs`` documents and the first ``questions`` questions in kfr's formats; the
    fine-tuning stage's copies hold the first ``ft_docs`` documents and the first person's
    questions."""
    out.mkdir(parents=True, exist_ok=True)
    files = KnowledgeFiles(
        out / "knowledge.jsonl",
        out / "questions.jsonl",
        out / "knowledge.jsonl" if ft_docs == docs else out / "ft_knowledge.jsonl",
        out / "ft_questions.jsonl",
        docs,
        ft_docs,
    )
    write_knowledge_base_jsonl(files.knowledge, people.documents[:docs])
    write_questions_jsonl(files.questions, first_questions(people, questions))
    if ft_docs != docs:
        write_knowledge_base_jsonl(files.ft_knowledge, people.documents[:ft_docs])
    write_questions_jsonl(files.ft_questions, first_questions(people, QUESTIONS_PER_PERSON))
    return files

"""The embedded default dataset: biographies of invented people, facts no model has seen.

Every entity is a fictional person with six facts, each drawn from its own pool of values
(:mod:`kfr.data.novel_facts_tables`). The generator writes a knowledge base (one biography per
person), one four-option question per fact and template paraphrases of every biography for the
paraphrase-augmentation experiment; :func:`training_pairs` writes training questions from the
facts in phrasings of their own.

Versions (``NovelFactsSpec.version``): 1 is the original set. 2 keeps version 1's entities,
facts and direct questions (questions.jsonl byte for byte) and adds a mentor relation (every
person's mentor is another person: one more sentence in each document and paraphrase,
``meta["facts"]["mentor"]``) and the probe families of :mod:`kfr.data.probes`
(``probes-<family>.jsonl``): questions in forms the training data never uses.

Output depends on the spec only: version 1's randomness comes from one ``random.Random(seed)``,
version 2's additions from ``random.Random(f"{seed}/v2")`` drawn after it (and the probes from
their own), and everything is iterated in a fixed order, so the same spec gives byte-identical
files. Add a version whenever the output changes (cached copies are keyed on it).

A cell generates the set into the cache (:func:`ensure_novel_facts`); the ``kfr-novel-facts``
command (:mod:`kfr.cli.novel_facts`) writes it anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kfr.core import faults
from kfr.core.errors import UserError
from kfr.core.storage import atomic_write_json, build_directory_once
from kfr.data.cards import DIRECTORY_CARD, sha256_file
from kfr.data.knowledge_base import write_knowledge_base_jsonl
from kfr.data.novel_facts_tables import (
    ATTRIBUTES,
    DOMAINS,
    FIRST_NAME_ENDINGS,
    FIRST_NAME_ONSETS,
    LAST_NAME_ENDINGS,
    LAST_NAME_STEMS,
    MENTOR,
    MENTOR_SENTENCE_TEMPLATES,
    QUESTION_TEMPLATES,
    REVERSE_TRAINING_TEMPLATES,
    SENTENCE_TEMPLATES,
    TRAINING_QUESTION_TEMPLATES,
)
from kfr.data.paraphrases import write_paraphrases_jsonl
from kfr.data.probes import PROBE_FAMILIES, generate_probes, probe_file_name
from kfr.data.probes_v3 import MAKERS_V3
from kfr.data.questions import write_questions_jsonl
from kfr.data.schema import Document, QaPair, Question

GENERATOR_NAME = "kfr.data.novel_facts"
GENERATOR_VERSION = 3  # the newest version, the default; 1 and 2 stay reproducible byte for byte
VERSIONS = (1, 2, 3)
DIRECTIONS = ("forward", "both")  # qa.directions
N_CHOICES = 4
MAX_ENTITIES = 5000  # well below the number of possible names, so sampling stays fast
MAX_PARAPHRASES = 100
_MAX_DRAWS_PER_PARAPHRASE = 1000


@dataclass(frozen=True)
class NovelFactsSpec:
    """What to generate; the same spec always gives the same dataset."""

    n_entities: int = 40
    seed: int = 0
    n_paraphrases: int = 8
    version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        for name in ("n_entities", "seed", "n_paraphrases", "version"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"expected an integer, got {value!r}", field=name)
        if not 4 <= self.n_entities <= MAX_ENTITIES:
            raise UserError(
                f"must be between 4 and {MAX_ENTITIES}, got {self.n_entities}", field="n_entities"
            )
        if not 0 <= self.n_paraphrases <= MAX_PARAPHRASES:
            raise UserError(
                f"must be between 0 and {MAX_PARAPHRASES}, got {self.n_paraphrases}",
                field="n_paraphrases",
            )
        if self.version not in VERSIONS:
            raise UserError(f"must be one of {list(VERSIONS)}, got {self.version}", field="version")
        for attribute in ATTRIBUTES:
            if len(set(DOMAINS[attribute])) < N_CHOICES:
                raise UserError(
                    f"domain has fewer than {N_CHOICES} distinct values", field=attribute
                )


@dataclass
class NovelFacts:
    documents: list[Document]
    questions: list[Question]
    paraphrases: dict[str, list[str]]  # document id -> paraphrases, in document order
    # version >= 2: family -> probe questions (kfr.data.probes, probes_v3); version 1: {}
    probes: dict[str, list[Question]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entity:
    doc_id: str
    name: str
    facts: tuple[tuple[str, str], ...]  # (attribute, value) in ATTRIBUTES order


# ----------------------------------------------------------------------------- generation


def _possessive(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _capitalised(text: str) -> str:
    return text[0].upper() + text[1:]


def _sample_names(rng: random.Random, n: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        first = rng.choice(FIRST_NAME_ONSETS) + rng.choice(FIRST_NAME_ENDINGS)
        last = rng.choice(LAST_NAME_STEMS) + rng.choice(LAST_NAME_ENDINGS)
        name = f"{first} {last}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _sample_entities(rng: random.Random, n: int) -> list[_Entity]:
    width = max(4, len(str(n)))
    names = _sample_names(rng, n)
    return [
        _Entity(
            doc_id=f"person-{i + 1:0{width}d}",
            name=name,
            facts=tuple((attribute, rng.choice(DOMAINS[attribute])) for attribute in ATTRIBUTES),
        )
        for i, name in enumerate(names)
    ]


def _sentence(name: str, attribute: str, value: str, template: int) -> str:
    # Always the full name: surnames repeat across entities, and every sentence (and so every
    # retrieval chunk or training window) should say whom it is about.
    text = SENTENCE_TEMPLATES[attribute][template].format(
        s=name, s_pos=_possessive(name), v=value, a=_article(value)
    )
    return text[0].upper() + text[1:]


def _biography(entity: _Entity, order: list[int], templates: list[int]) -> str:
    """Sentences for facts ``order`` (indices into entity.facts) using ``templates[index]``."""
    return " ".join(
        _sentence(entity.name, *entity.facts[index], templates[index]) for index in order
    )


def _document(entity: _Entity) -> Document:
    n = len(entity.facts)
    return Document(
        id=entity.doc_id,
        text=_biography(entity, list(range(n)), [0] * n),
        title=entity.name,
        meta={"entity": entity.name, "facts": dict(entity.facts)},
    )


def _paraphrases(rng: random.Random, entity: _Entity, original: str, n: int) -> list[str]:
    """``n`` distinct rewrites of ``original``: random templates and a shuffled fact order."""
    seen = {original}
    paraphrases: list[str] = []
    for _ in range(n * _MAX_DRAWS_PER_PARAPHRASE):
        if len(paraphrases) == n:
            break
        order = list(range(len(entity.facts)))
        rng.shuffle(order)
        templates = [rng.randrange(len(SENTENCE_TEMPLATES[a])) for a, _ in entity.facts]
        text = _biography(entity, order, templates)
        if text not in seen:
            seen.add(text)
            paraphrases.append(text)
    if len(paraphrases) < n:  # unreachable with the template tables above
        raise UserError(
            f"could only make {len(paraphrases)} distinct paraphrases", field="n_paraphrases"
        )
    return paraphrases


def _questions(rng: random.Random, entity: _Entity) -> list[Question]:
    questions = []
    for attribute, answer in entity.facts:
        distractors = rng.sample([v for v in DOMAINS[attribute] if v != answer], N_CHOICES - 1)
        position = rng.randrange(N_CHOICES)
        choices = [*distractors[:position], answer, *distractors[position:]]
        questions.append(
            Question(
                id=f"{entity.doc_id}-{attribute}",
                question=QUESTION_TEMPLATES[attribute].format(name=entity.name),
                choices=tuple(choices),
                answer=position,
                subject=attribute,
                source_ids=(entity.doc_id,),
            )
        )
    return questions


def _mentors(rng: random.Random, entities: Sequence[_Entity]) -> dict[str, _Entity]:
    """Each person's mentor: one cycle through all people in a shuffled order, so everyone has
    one mentor and mentors one person, nobody mentors themselves and (at 4 or more people) no two
    people mentor each other."""
    order = list(entities)
    rng.shuffle(order)
    return {entity.doc_id: order[(i + 1) % len(order)] for i, entity in enumerate(order)}


def _mentor_sentence(name: str, mentor: str, template: int) -> str:
    text = MENTOR_SENTENCE_TEMPLATES[template].format(s=name, s_pos=_possessive(name), m=mentor)
    return text[0].upper() + text[1:]


def _with_mentor(document: Document, mentor: str) -> Document:
    """Version 2's document: version 1's text with the mentor sentence appended."""
    name = document.meta["entity"]
    return replace(
        document,
        text=f"{document.text} {_mentor_sentence(name, mentor, 0)}",
        meta={**document.meta, "facts": {**document.meta["facts"], MENTOR: mentor}},
    )


def _paraphrase_with_mentor(rng: random.Random, paraphrase: str, name: str, mentor: str) -> str:
    """Version 1's paraphrase with a mentor sentence (random template) at a random position;
    distinct paraphrases stay distinct (removing the one mentor sentence gives version 1's)."""
    sentences = [s if s.endswith(".") else s + "." for s in paraphrase.split(". ")]
    template = rng.randrange(len(MENTOR_SENTENCE_TEMPLATES))
    sentences.insert(rng.randrange(len(sentences) + 1), _mentor_sentence(name, mentor, template))
    return " ".join(sentences)


def generate_novel_facts(spec: NovelFactsSpec) -> NovelFacts:
    rng = random.Random(spec.seed)
    entities = _sample_entities(rng, spec.n_entities)
    documents = [_document(entity) for entity in entities]
    questions = [q for entity in entities for q in _questions(rng, entity)]
    paraphrases = {
        entity.doc_id: _paraphrases(rng, entity, document.text, spec.n_paraphrases)
        for entity, document in zip(entities, documents, strict=True)
    }
    if spec.version == 1:
        return NovelFacts(documents=documents, questions=questions, paraphrases=paraphrases)
    # Version 2: everything new from its own generator, drawn after version 1's, so version 1's
    # entities, facts, questions and paraphrase wording stay as they were.
    rng = random.Random(f"{spec.seed}/v2")
    mentors = {doc_id: mentor.name for doc_id, mentor in _mentors(rng, entities).items()}
    documents = [_with_mentor(d, mentors[d.id]) for d in documents]
    paraphrases = {
        entity.doc_id: [
            _paraphrase_with_mentor(rng, text, entity.name, mentors[entity.doc_id])
            for text in paraphrases[entity.doc_id]
        ]
        for entity in entities
    }
    return NovelFacts(
        documents=documents,
        questions=questions,
        paraphrases=paraphrases,
        probes=generate_probes(documents, spec.seed)
        if spec.version == 2
        else _probes_v3(documents, spec.seed),
    )


def _probes_v3(documents: Sequence[Document], seed: int) -> dict[str, list[Question]]:
    """Version 3's families that have questions (a tiny knowledge base has no value several
    people share, and at 4 people too few others to offer as someone's mentor)."""
    probes = {family: make(documents, seed) for family, make in MAKERS_V3.items()}
    return {family: questions for family, questions in probes.items() if questions}


# ----------------------------------------------------------------------------- training pairs


def _fact_meta(document: Document) -> tuple[str, dict[str, str]]:
    name, facts = document.meta.get("entity"), document.meta.get("facts")
    known = isinstance(facts, dict) and facts and set(facts) <= set(TRAINING_QUESTION_TEMPLATES)
    if (
        not known
        or not isinstance(name, str)
        or not all(isinstance(v, str) for v in facts.values())
    ):
        raise UserError(
            "template training questions come with the generated novel_facts data set; use "
            f"qa=llm or qa=file (document '{document.id}' has no novel_facts meta facts)",
            field="qa.source",
        )
    return name, facts


def _pick(templates: Sequence[str], per_fact: int, key: str) -> list[int]:
    # A string seed is hashed the same way in every process (unlike hash()).
    return sorted(random.Random(key).sample(range(len(templates)), per_fact))


def training_pairs(
    documents: Sequence[Document], per_fact: int, seed: int, directions: str = "forward"
) -> list[QaPair]:
    """``per_fact`` training questions per fact of every document, phrased with
    :data:`TRAINING_QUESTION_TEMPLATES` (never the evaluation's), answered by the fact's value
    (the mentor's name for version 2's mentor fact).

    ``directions="both"`` adds, per fact whose value identifies one person of ``documents``
    (no other document holds it), ``per_fact`` reverse questions
    (:data:`REVERSE_TRAINING_TEMPLATES`, phrased unlike the reversal probes) answered by the
    person's name; ids ``{doc}-{attribute}-r{j}``. Values several people share get none: their
    reverse question would have several right answers. (The mentor gets no reverse question.)

    A forward fact's phrasings depend on ``seed``, the document id and the attribute only, so a
    document gets the same forward pairs whatever else the knowledge base holds; which reverse
    questions exist depends on the whole knowledge base.
    """
    most = min(len(templates) for templates in TRAINING_QUESTION_TEMPLATES.values())
    if isinstance(per_fact, bool) or not isinstance(per_fact, int) or not 1 <= per_fact <= most:
        raise UserError(f"must be between 1 and {most}, got {per_fact!r}", field="qa.per_fact")
    if directions not in DIRECTIONS:
        raise UserError(
            f"must be one of {list(DIRECTIONS)}, got {directions!r}", field="qa.directions"
        )
    metas = [_fact_meta(document) for document in documents]
    holders: dict[tuple[str, str], int] = {}
    for _, facts in metas:
        for attribute, value in facts.items():
            holders[attribute, value] = holders.get((attribute, value), 0) + 1
    pairs = []
    for document, (name, facts) in zip(documents, metas, strict=True):
        # Fixed order, not the meta's key order.
        for attribute in (a for a in TRAINING_QUESTION_TEMPLATES if a in facts):
            templates = TRAINING_QUESTION_TEMPLATES[attribute]
            pairs += [
                QaPair(
                    id=f"{document.id}-{attribute}-t{j}",
                    doc_id=document.id,
                    question=templates[j].format(name=name),
                    answer=facts[attribute],
                )
                for j in _pick(templates, per_fact, f"{seed}/{document.id}/{attribute}")
            ]
        if directions != "both":
            continue
        for attribute in (a for a in ATTRIBUTES if a in facts):
            value = facts[attribute]
            if holders[attribute, value] != 1:
                continue
            templates = REVERSE_TRAINING_TEMPLATES[attribute]
            key = f"{seed}/{document.id}/{attribute}/reverse"
            pairs += [
                QaPair(
                    id=f"{document.id}-{attribute}-r{j}",
                    doc_id=document.id,
                    question=_capitalised(templates[j].format(v=value, a=_article(value))),
                    answer=name,
                )
                for j in _pick(templates, per_fact, key)
            ]
    return pairs


# ----------------------------------------------------------------------------- files

FILE_NAMES = {
    "knowledge": "knowledge.jsonl",
    "questions": "questions.jsonl",
    "paraphrases": "paraphrases.jsonl",
    "card": DIRECTORY_CARD,
}


def write_novel_facts(spec: NovelFactsSpec, out_dir: str | Path) -> dict[str, Path]:
    """Write the dataset and its card into ``out_dir``; returns ``{kind: path}`` (version 2 adds
    ``probes-<family>`` kinds, one file per probe family)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = generate_novel_facts(spec)
    paths = {kind: out_dir / name for kind, name in FILE_NAMES.items()}
    write_knowledge_base_jsonl(paths["knowledge"], data.documents)
    faults.point("data.generate")
    write_questions_jsonl(paths["questions"], data.questions)
    write_paraphrases_jsonl(paths["paraphrases"], data.paraphrases)
    hashed = ["knowledge", "questions", "paraphrases"]
    for family, probes in data.probes.items():
        kind = f"probes-{family}"
        paths[kind] = out_dir / probe_file_name(family)
        write_questions_jsonl(paths[kind], probes)
        hashed.append(kind)
    counts = {
        "documents": len(data.documents),
        "questions": len(data.questions),
        "paraphrases": sum(len(p) for p in data.paraphrases.values()),
        "knowledge_characters": sum(len(d.text) for d in data.documents),
    }
    if data.probes:
        counts["probes"] = {family: len(probes) for family, probes in data.probes.items()}
    card = {
        "generator": GENERATOR_NAME,
        "version": spec.version,
        "spec": asdict(spec),
        "counts": counts,
        "sha256": {paths[kind].name: sha256_file(paths[kind]) for kind in hashed},
    }
    atomic_write_json(paths["card"], card)
    return paths


def cache_name(spec: NovelFactsSpec) -> str:
    return f"novel_facts-v{spec.version}-{spec.n_entities}e-{spec.n_paraphrases}p-seed{spec.seed}"


def ensure_novel_facts(spec: NovelFactsSpec, cache_dir: str | Path) -> Path:
    """The dataset's directory under ``cache_dir``, built once even by concurrent jobs."""
    return build_directory_once(
        Path(cache_dir) / cache_name(spec), lambda tmp: write_novel_facts(spec, tmp)
    )


# The tables tests and other modules read through this module are re-exported.
__all__ = [
    "ATTRIBUTES", "DIRECTIONS", "DOMAINS", "GENERATOR_VERSION", "MENTOR", "PROBE_FAMILIES",
    "QUESTION_TEMPLATES", "REVERSE_TRAINING_TEMPLATES", "SENTENCE_TEMPLATES",
    "TRAINING_QUESTION_TEMPLATES", "NovelFacts", "NovelFactsSpec", "cache_name",
    "ensure_novel_facts", "generate_novel_facts", "training_pairs", "write_novel_facts",
]  # fmt: skip

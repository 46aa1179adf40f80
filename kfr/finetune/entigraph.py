"""Entity-graph augmentation (EntiGraph, Yang et al. 2024): synthetic texts about how pairs (and,
from templates, triples) of a document's entities relate, for continued pre-training.

``augment.source=entigraph``; ``augment.paraphrases=N`` is the number of texts per document.
:func:`kfr.finetune.paraphrases.training_texts` picks the writer:

- templates (:func:`template_entigraph`) when every document's ``meta`` holds ``{"entity": name,
  "facts": {attribute: value}}`` (the novel_facts generator's documents). The entities are the
  person and every fact value; the texts relate the person to one value, two values to each
  other through the person, or three values through the person, in turn, each time choosing the
  facts covered least so far. Deterministic for the seed; the N texts of a document are distinct.
- an instruction-tuned model (:func:`llm_entigraph`, ``augment.generator``) for any knowledge
  base: step 1 asks for the document's entities (JSON), step 2, for sampled pairs of them, for a
  text about how the two relate given the document (JSON ``{"text": ...}``), kept only when it
  names both. Answers are validated and retried (:func:`kfr.generation.generate_json`); results
  are cached per settings under ``<cache>/entigraph/<model>-<key>/`` in the paraphrase JSONL
  format, with the accepted and rejected counts.

A document that gets fewer than N usable texts trains on what it has; ``training_texts`` counts
the shortfall in results.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import AugmentConfig
from kfr.core.storage import atomic_write_json, build_directory_once
from kfr.data.readers import read_paraphrases, write_paraphrases_jsonl
from kfr.data.schema import Document
from kfr.finetune.keys import content_digest, model_identity
from kfr.generation import SamplingSettings, TextGenerator, TransformersGenerator, generate_json

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- templates

# Attempts per wanted text before a document is left short (only documents with one or two
# facts can run out of distinct texts).
_MAX_DRAWS_PER_TEXT = 50


@dataclass(frozen=True)
class Relation:
    """How a fact's value reads as an entity and as something the person did.

    Placeholders: ``{v}`` the value, ``{a}`` its article, ``{w}`` the attribute in words;
    ``about`` also ``{n}`` (the noun) and ``{s}`` (the person).
    """

    noun: str  # the value as an entity: "the year {v}"
    verbs: tuple[str, ...]  # after the person's name: "was born in {v}"
    about: str  # a sentence led by the value: "{n} saw the birth of {s}."


RELATIONS: dict[str, Relation] = {
    "birth_city": Relation(
        "{v}",
        ("was born in {v}", "came from {v}", "was born in the city of {v}"),
        "{n} is the city where {s} was born.",
    ),
    "birth_year": Relation(
        "the year {v}",
        ("was born in {v}", "came into the world in {v}", "was born in the year {v}"),
        "{n} saw the birth of {s}.",
    ),
    "profession": Relation(
        "the work of {a} {v}",
        ("worked as {a} {v}", "earned a living as {a} {v}", "was {a} {v} by profession"),
        "{n} was how {s} earned a living.",
    ),
    "employer": Relation(
        "{v}",
        ("worked for {v}", "was employed by {v}", "spent a long career at {v}"),
        "{n} counted {s} among its employees.",
    ),
    "founded_organisation": Relation(
        "the {v}",
        ("founded the {v}", "was the founder of the {v}", "established the {v}"),
        "{n} was founded by {s}.",
    ),
    "favourite_instrument": Relation(
        "the {v}",
        (
            "loved the {v} above all other instruments",
            "had the {v} as favourite musical instrument",
            "liked the {v} best of all musical instruments",
        ),
        "{n} was the favourite musical instrument of {s}.",
    ),
    "mentor": Relation(  # novel_facts version 2: the mentor's full name
        "{v}",
        ("was mentored by {v}", "trained under {v}", "learnt the most from {v}"),
        "{n} was the mentor of {s}.",
    ),
}
# Any other attribute of a user's meta facts.
GENERIC_RELATION = Relation("{v}", ("had {v} as {w}", "had the {w} {v}"), "{n} is the {w} of {s}.")

# Texts per number of linked facts. Placeholders: {s} the person; {n1}.. the values as nouns,
# {v1}.. what the person did, {about1} a sentence led by the first value.
TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (  # the person and one value
        "{s} {v1}. {about1}",
        "What links {s} and {n1}? {s} {v1}.",
        "{s} and {n1} are connected: {s} {v1}.",
        "{about1} In other words, {s} {v1}.",
    ),
    2: (  # two values, linked through the person
        "{n1} and {n2} are connected through {s}, who {v1} and {v2}.",
        "What do {n1} and {n2} have in common? {s} {v1}; the same {s} {v2}.",
        "{about1} The same {s} {v2}, which links {n1} to {n2}.",
        "{s} is the link between {n1} and {n2}: {s} {v1} and {v2}.",
    ),
    3: (  # three values, linked through the person
        "{n1}, {n2} and {n3} meet in the life of {s}, who {v1}, {v2} and {v3}.",
        "{s} ties together {n1}, {n2} and {n3}: {s} {v1}, {v2} and {v3}.",
        "{about1} Besides, {s} {v2} and {v3}; {n1}, {n2} and {n3} are all linked through {s}.",
    ),
}


@dataclass(frozen=True)
class EntityText:
    entities: tuple[str, ...]  # the person, then the values the text relates
    text: str


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def fact_entities(document: Document) -> tuple[str, list[tuple[str, str]]] | None:
    """``(person, [(attribute, value), ...])`` from the document's meta, None without facts."""
    meta = document.meta or {}
    facts = meta.get("facts")
    name = meta.get("entity") or document.title
    if not isinstance(facts, dict) or not isinstance(name, str) or not name.strip():
        return None
    pairs = [(str(a), str(v).strip()) for a, v in facts.items() if str(v).strip()]
    return (name.strip(), pairs) if pairs else None


def _render(name: str, facts: Sequence[tuple[str, str]], rng: random.Random) -> str:
    fields: dict[str, str] = {"s": name}
    for number, (attribute, value) in enumerate(facts, start=1):
        relation = RELATIONS.get(attribute, GENERIC_RELATION)
        words = {"v": value, "a": _article(value), "w": attribute.replace("_", " ")}
        noun = relation.noun.format(**words)
        fields[f"n{number}"] = noun
        fields[f"v{number}"] = rng.choice(relation.verbs).format(**words)
        fields[f"about{number}"] = _capitalised(relation.about.format(n=noun, s=name))
    return _capitalised(rng.choice(TEMPLATES[len(facts)]).format(**fields))


def document_entity_texts(document: Document, n: int, seed: int) -> list[EntityText]:
    """Up to ``n`` distinct texts about the document's entities; the same for the same seed.

    Person-value pairs, value pairs and value triples take turns; each time the unused link
    whose facts are covered least so far is taken (ties in a seeded shuffled order), so a few
    texts already cover every fact.
    """
    found = fact_entities(document)
    if found is None:
        raise ValueError(f"document {document.id!r} has no meta facts")
    name, facts = found
    rng = random.Random(f"kfr-entigraph:{seed}:{document.id}")
    links = {
        size: list(itertools.combinations(range(len(facts)), size))
        for size in TEMPLATES
        if size <= len(facts)
    }
    for group in links.values():
        rng.shuffle(group)
    unused = {size: list(group) for size, group in links.items()}
    sizes = sorted(links)
    coverage = [0] * len(facts)
    texts: list[EntityText] = []
    seen = {document.text}
    for step in range(n * _MAX_DRAWS_PER_TEXT):
        if len(texts) == n:
            break
        size = sizes[step % len(sizes)]
        if not unused[size]:  # every link of this size used: again, with other wording
            unused[size] = list(links[size])
        link = min(unused[size], key=lambda chosen: sum(coverage[i] for i in chosen))
        unused[size].remove(link)
        linked = [facts[i] for i in link]
        text = _render(name, linked, rng)
        if text in seen:
            continue
        seen.add(text)
        for i in link:
            coverage[i] += 1
        texts.append(EntityText((name, *(value for _, value in linked)), text))
    return texts


def template_entigraph(documents: Sequence[Document], n: int, seed: int) -> dict[str, list[str]]:
    """Document id -> up to ``n`` template entity-graph texts (documents with meta facts)."""
    return {d.id: [t.text for t in document_entity_texts(d, n, seed)] for d in documents}


def has_fact_meta(documents: Sequence[Document]) -> bool:
    return bool(documents) and all(fact_entities(d) is not None for d in documents)


# ----------------------------------------------------------------------------- LLM

# Bump PROMPT_VERSION when the wording changes: cached texts are keyed on it.
PROMPT_VERSION = 1
ENTITY_INSTRUCTION = (
    "List the entities of the text below: the people, places, organisations, objects, dates, "
    "numbers and ideas it says something about. Copy each entity exactly as the text writes it."
    ' Return a JSON object with one key, "entities", holding the list of entities.'
    "\n\nText:\n{text}"
)
ENTITY_PREFILL = '{"entities": ["'
RELATION_INSTRUCTION = (
    'Using only the text below, write a short passage about how "{first}" and "{second}" are '
    "related. Name both of them in the passage and add no fact that is not in the text."
    ' Return a JSON object with one key, "text", holding the passage.\n\nText:\n{text}'
)
RELATION_PREFILL = '{"text": "'
MAX_ENTITIES = 12  # per document, the first ones the model lists
LLM_FILE = "entigraph.jsonl"
LLM_ENTITIES = "entities.json"
LLM_STATS = "stats.json"


def _normalise(text: str) -> str:
    return " ".join(text.split())


def entity_parser(document: Document) -> Callable[[Any], list[str]]:
    """Validates one entity answer: the listed entities that occur in the document (2 or more)."""
    where = document.text.casefold()

    def parse(value: Any) -> list[str]:
        items = value.get("entities") if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise ValueError('expected {"entities": [...]}')
        entities: list[str] = []
        for item in items:
            entity = _normalise(item) if isinstance(item, str) else ""
            known = {e.casefold() for e in entities}
            if entity and entity.casefold() in where and entity.casefold() not in known:
                entities.append(entity)
        if len(entities) < 2:
            raise ValueError("fewer than two entities of the text in the answer")
        return entities[:MAX_ENTITIES]

    return parse


def relation_parser(document: Document, first: str, second: str) -> Callable[[Any], str]:
    """Validates one relation answer: a non-empty text naming both entities."""

    def parse(value: Any) -> str:
        text = value.get("text") if isinstance(value, dict) else value
        text = _normalise(text) if isinstance(text, str) else ""
        if not text or text == _normalise(document.text):
            raise ValueError("no text, or the document itself")
        folded = text.casefold()
        if first.casefold() not in folded or second.casefold() not in folded:
            raise ValueError("the text does not name both entities")
        return text

    return parse


def sampled_pairs(entities: Sequence[str], n: int, seed: int, doc_id: str) -> list[tuple[str, str]]:
    """``n`` pairs of the entities, seeded per document; repeated in turn when there are fewer."""
    pairs = list(itertools.combinations(entities, 2))
    random.Random(f"kfr-entigraph-pairs:{seed}:{doc_id}").shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(n)] if pairs else []


def generate_entigraph(
    generator: TextGenerator,
    documents: Sequence[Document],
    n: int,
    *,
    retries: int,
    seed: int,
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, Any]]:
    """(texts, entities, stats): up to ``n`` distinct relation texts per document."""
    parsers = [entity_parser(d) for d in documents]
    listed, entity_stats = generate_json(
        generator,
        [ENTITY_INSTRUCTION.format(text=d.text) for d in documents],
        lambda index, value: parsers[index](value),
        retries=retries,
        seed=seed,
        prefill=ENTITY_PREFILL,
    )
    entities = {d.id: found or [] for d, found in zip(documents, listed, strict=True)}
    asks = [(d, pair) for d in documents for pair in sampled_pairs(entities[d.id], n, seed, d.id)]
    checks = [relation_parser(d, *pair) for d, pair in asks]
    written, relation_stats = generate_json(
        generator,
        [RELATION_INSTRUCTION.format(first=a, second=b, text=d.text) for d, (a, b) in asks],
        lambda index, value: checks[index](value),
        retries=retries,
        seed=seed + 1,
        prefill=RELATION_PREFILL,
    )
    texts: dict[str, list[str]] = {d.id: [] for d in documents}
    duplicates = 0
    for (document, _), text in zip(asks, written, strict=True):
        if text is None:
            continue
        if text in texts[document.id]:
            duplicates += 1
        else:
            texts[document.id].append(text)
    relations = relation_stats.to_json()
    stats = {
        "entities": entity_stats.to_json(),
        "relations": relations,
        "documents_without_entities": sum(not e for e in entities.values()),
        "accepted": sum(len(t) for t in texts.values()),
        "rejected": relations["invalid_json"] + relations["invalid_content"],
        "duplicates": duplicates,
    }
    return texts, entities, stats


def llm_entigraph(
    augment: AugmentConfig,
    documents: Sequence[Document],
    seed: int,
    cache_dir: str | Path,
    *,
    settings: SamplingSettings,
    generator: TextGenerator | None = None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Generated entity-graph texts, from the cache when these settings already made them.

    ``settings``: the checked sampling settings of ``augment.generator``.
    """
    gen, n = augment.generator, augment.paraphrases
    if gen.retries < 0:
        raise UserError(f"must be >= 0, got {gen.retries}", field="augment.generator.retries")
    key = content_digest(
        {
            "model": model_identity(gen.model, keep_dtype=True),
            "sampling": settings.to_json(),
            "retries": gen.retries,
            "n": n,
            "seed": seed,
            "prompt": [PROMPT_VERSION, ENTITY_PREFILL, RELATION_PREFILL, MAX_ENTITIES],
            "documents": [[d.id, d.text] for d in documents],
        }
    )
    target = Path(cache_dir) / "entigraph" / f"{gen.model.name}-{key}"

    def build(out_dir: Path) -> None:
        writer = generator or TransformersGenerator.from_config(gen.model, cache_dir, settings)
        log.info(
            "Writing %d entity-graph texts for each of %d documents with %s",
            n,
            len(documents),
            writer.name,
        )
        texts, entities, stats = generate_entigraph(
            writer, documents, n, retries=gen.retries, seed=seed
        )
        write_paraphrases_jsonl(out_dir / LLM_FILE, texts)
        atomic_write_json(out_dir / LLM_ENTITIES, entities)
        atomic_write_json(out_dir / LLM_STATS, stats)

    build_directory_once(target, build)
    found = read_paraphrases(target / LLM_FILE)
    stats = json.loads((target / LLM_STATS).read_text(encoding="utf-8"))
    return found, {"writer": "llm", "cache": str(target), "generation": stats}


__all__ = [
    "GENERIC_RELATION",
    "RELATIONS",
    "TEMPLATES",
    "EntityText",
    "Relation",
    "document_entity_texts",
    "fact_entities",
    "generate_entigraph",
    "has_fact_meta",
    "llm_entigraph",
    "sampled_pairs",
    "template_entigraph",
]

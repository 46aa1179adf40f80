"""Probe questions: does injected knowledge generalize beyond recalling a fact when asked for it?

Written by the novel_facts generator (version 2, :mod:`kfr.data.novel_facts`) from the same
knowledge base as the direct questions, in forms the training data never uses (no word 5-gram
in common with any training template, forward or reverse: the unit tests measure it), as
``probes-<family>.jsonl`` in the standard question format. Families (:data:`PROBE_FAMILIES`):

- ``reversal``: from a fact's value back to the person ("Who founded the Pellam Seed Library?"),
  four people as options. None of the three distractors holds the value, so the answer is well
  defined; where other people of the knowledge base share the value, the question adds a second
  fact that only the answer has ("Who was born in Brimsalt in 1950?"). One per fact; ``subject``
  the fact's attribute, ``source_ids`` the person's document.
- ``two_hop``: a fact of the person's mentor ("In which city was X's mentor born?"), four
  values of that fact's domain as options, X's own value among the distractors when it differs
  from the answer (a model that skips the hop picks it). One per person and attribute;
  ``source_ids`` X's document, then the mentor's.
- ``comparison``: which of two people was born earlier (or later, or is older, or younger), the
  two names as options, their birth years distinct; ``source_ids`` both documents in the order
  the question names them. :data:`COMPARISONS_PER_PERSON` times the number of people (at most
  every pair once).

Each family draws from its own ``random.Random(f"{seed}/probes/{family}")``, documents in
knowledge-base order, so the same knowledge base and seed give the same probes. Ids:
``reversal-person-0001-birth_city``, ``two_hop-person-0001-birth_city``,
``comparison-person-0001-person-0007``.

These are version 2's families, kept byte for byte; version 3's (:mod:`kfr.data.probes_v3`)
repair what they mixed (the lure in two_hop, the position of the answer in comparison, the
one- and two-cue reversal questions). :data:`FAMILIES_BY_VERSION` says which version writes
which families; :data:`PROBE_FAMILIES` is every family name any version writes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from kfr.data.novel_facts_tables import ATTRIBUTES, DOMAINS, MENTOR
from kfr.data.schema import Document, Question

FAMILIES_BY_VERSION = {
    2: ("reversal", "two_hop", "comparison"),
    3: ("reversal", "reversal_two_cue", "two_hop", "two_hop_lure", "mentor", "comparison"),
}
# Newest version first: it writes every family an older version did.
PROBE_FAMILIES = tuple(
    dict.fromkeys(
        f for v in sorted(FAMILIES_BY_VERSION, reverse=True) for f in FAMILIES_BY_VERSION[v]
    )
)
# One option in n.
CHANCE = {"comparison": 1 / 2} | {f: 1 / 4 for f in PROBE_FAMILIES if f != "comparison"}
N_CHOICES = 4
COMPARISONS_PER_PERSON = 5

# reversal: "Who {clause}?" or, with a second fact, "Who {clause} and {clause}?" ({v} the value,
# {a} its article); a birth city with a birth year reads "Who was born in {city} in {year}?".
REVERSAL_CLAUSES = {
    "birth_city": "was born in {v}",
    "birth_year": "was born in {v}",
    "profession": "was {a} {v} by trade",
    "employer": "worked at {v}",
    "founded_organisation": "founded the {v}",
    "favourite_instrument": "favoured the {v} over every other instrument",
}
# two_hop: {pos} is the person's possessive ("Velorin Quastebrook's").
TWO_HOP_TEMPLATES = {
    "birth_city": "In which city was {pos} mentor born?",
    "birth_year": "In what year was {pos} mentor born?",
    "profession": "What profession did {pos} mentor follow?",
    "employer": "Which company employed {pos} mentor?",
    "founded_organisation": "Which organisation was founded by {pos} mentor?",
    "favourite_instrument": "Which musical instrument did {pos} mentor love most?",
}
# comparison: (template, whether the answer is the one born earlier)
COMPARISON_TEMPLATES = (
    ("Who was born earlier, {x} or {y}?", True),
    ("Who was born later, {x} or {y}?", False),
    ("Which of the two is older, {x} or {y}?", True),
    ("Which of the two is younger, {x} or {y}?", False),
)


def probe_file_name(family: str) -> str:
    return f"probes-{family}.jsonl"


def possessive(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def people_of(documents: Sequence[Document]) -> list[tuple[str, str, dict[str, str]]]:
    """``(doc_id, name, facts)`` per document; ValueError without version 2's meta facts."""
    people = []
    for document in documents:
        name, facts = document.meta.get("entity"), document.meta.get("facts")
        if not isinstance(name, str) or not isinstance(facts, dict) or MENTOR not in facts:
            raise ValueError(f"document {document.id!r} has no novel_facts version 2 meta facts")
        people.append((document.id, name, facts))
    return people


def with_answer_at(
    rng: random.Random, id_: str, text: str, answer: str, distractors: Sequence[str], **kwargs
) -> Question:
    position = rng.randrange(len(distractors) + 1)
    choices = (*distractors[:position], answer, *distractors[position:])
    return Question(id=id_, question=text, choices=choices, answer=position, **kwargs)


def _clause(attribute: str, value: str) -> str:
    return REVERSAL_CLAUSES[attribute].format(v=value, a=_article(value))


def reversal_text(facts: dict[str, str], attribute: str, second: str | None) -> str:
    if second is None:
        return f"Who {_clause(attribute, facts[attribute])}?"
    if {attribute, second} == {"birth_city", "birth_year"}:
        return f"Who was born in {facts['birth_city']} in {facts['birth_year']}?"
    return f"Who {_clause(attribute, facts[attribute])} and {_clause(second, facts[second])}?"


def value_to_person_questions(
    documents: Sequence[Document], rng: random.Random, family: str, *, cues: int | None
) -> list[Question]:
    """Reversal questions (from a fact's value back to the person), ids
    ``{family}-{doc}-{attribute}``; a value several people share gets a second fact only this
    person has. ``cues``: None = every fact (version 2: a shared value without such a fact is
    asked with one cue); 1 = only values one person holds; 2 = only shared values that a second
    fact singles out."""
    people = people_of(documents)
    questions = []
    for doc_id, name, facts in people:
        for index, attribute in enumerate(ATTRIBUTES):
            value = facts[attribute]
            others = [f for d, _, f in people if d != doc_id and f[attribute] == value]
            if cues is not None and bool(others) != (cues == 2):
                continue
            second = None
            if others:  # the value alone names several people: add a fact only this one has
                rotated = ATTRIBUTES[index + 1 :] + ATTRIBUTES[:index]
                second = next((b for b in rotated if all(f[b] != facts[b] for f in others)), None)
                if second is None and cues == 2:  # nothing singles the person out
                    continue
            pool = [n for d, n, f in people if d != doc_id and f[attribute] != value]
            if len(pool) < N_CHOICES - 1:  # a tiny knowledge base
                continue
            questions.append(
                with_answer_at(
                    rng,
                    f"{family}-{doc_id}-{attribute}",
                    reversal_text(facts, attribute, second),
                    name,
                    rng.sample(pool, N_CHOICES - 1),
                    subject=attribute,
                    source_ids=(doc_id,),
                )
            )
    return questions


def reversal_probes(documents: Sequence[Document], seed: int) -> list[Question]:
    rng = random.Random(f"{seed}/probes/reversal")
    return value_to_person_questions(documents, rng, "reversal", cues=None)


def mentor_fact_questions(
    documents: Sequence[Document],
    rng: random.Random,
    family: str,
    *,
    lure: bool,
    hop_free: bool,
) -> list[Question]:
    """Two-hop questions (a fact of X's mentor), ids ``{family}-{doc}-{attribute}``: with
    ``lure`` X's own value is among the distractors when it differs from the answer; without
    ``hop_free`` the questions where X's value equals the mentor's are left out."""
    people = people_of(documents)
    by_name = {name: (doc_id, facts) for doc_id, name, facts in people}
    questions = []
    for doc_id, name, facts in people:
        mentor_id, mentor_facts = by_name[facts[MENTOR]]
        for attribute in ATTRIBUTES:
            answer, own = mentor_facts[attribute], facts[attribute]
            if own == answer and not hop_free:
                continue
            distractors = [own] if lure and own != answer else []
            pool = [v for v in DOMAINS[attribute] if v not in (answer, own)]
            distractors += rng.sample(pool, N_CHOICES - 1 - len(distractors))
            rng.shuffle(distractors)
            questions.append(
                with_answer_at(
                    rng,
                    f"{family}-{doc_id}-{attribute}",
                    TWO_HOP_TEMPLATES[attribute].format(pos=possessive(name)),
                    answer,
                    distractors,
                    subject=attribute,
                    source_ids=(doc_id, mentor_id),
                )
            )
    return questions


def two_hop_probes(documents: Sequence[Document], seed: int) -> list[Question]:
    rng = random.Random(f"{seed}/probes/two_hop")
    return mentor_fact_questions(documents, rng, "two_hop", lure=True, hop_free=True)


def comparison_probes(documents: Sequence[Document], seed: int) -> list[Question]:
    rng = random.Random(f"{seed}/probes/comparison")
    people = people_of(documents)
    pairs = [
        (first, second)
        for first, second in itertools.combinations(people, 2)
        if first[2]["birth_year"] != second[2]["birth_year"]
    ]
    chosen = sorted(
        rng.sample(range(len(pairs)), min(len(pairs), COMPARISONS_PER_PERSON * len(people)))
    )
    questions = []
    for index in chosen:
        first, second = pairs[index]
        template, earlier = rng.choice(COMPARISON_TEMPLATES)
        x, y = (first, second) if rng.random() < 0.5 else (second, first)
        x_first = int(x[2]["birth_year"]) < int(y[2]["birth_year"])
        answer = 0 if x_first == earlier else 1
        questions.append(
            Question(
                id=f"comparison-{first[0]}-{second[0]}",
                question=template.format(x=x[1], y=y[1]),
                choices=(x[1], y[1]),
                answer=answer,
                subject="birth_year",
                source_ids=(x[0], y[0]),
            )
        )
    return questions


MAKERS_V2 = {
    "reversal": reversal_probes,
    "two_hop": two_hop_probes,
    "comparison": comparison_probes,
}


def generate_probes(documents: Sequence[Document], seed: int) -> dict[str, list[Question]]:
    """Every family's probes of a version 2 knowledge base, in version 2's family order."""
    return {family: MAKERS_V2[family](documents, seed) for family in FAMILIES_BY_VERSION[2]}


__all__ = [
    "CHANCE",
    "COMPARISON_TEMPLATES",
    "FAMILIES_BY_VERSION",
    "N_CHOICES",
    "PROBE_FAMILIES",
    "REVERSAL_CLAUSES",
    "TWO_HOP_TEMPLATES",
    "comparison_probes",
    "generate_probes",
    "mentor_fact_questions",
    "people_of",
    "possessive",
    "probe_file_name",
    "reversal_probes",
    "reversal_text",
    "two_hop_probes",
    "value_to_person_questions",
    "with_answer_at",
]

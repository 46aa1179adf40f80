"""Version 3's probe families: each measures what it names.

Version 2's families (:mod:`kfr.data.probes`) mixed designs: its two-hop questions offered X's own
value as a distractor in almost every question (a model that skips the hop scores below chance,
so the family mostly measured the lure), a few of them needed no hop at all (X's value equal to
the mentor's), its comparison questions named the answer first in a varying share of questions
(a model that always picks one position scored anywhere in 0.44-0.56), and its reversal questions
joined one or two cues in one family. Version 3 (:data:`FAMILIES_V3`):

- ``reversal``: single-cue questions in the reversal-curse papers' style ("Who founded the Pellam
  Seed Library?"), only for values exactly one person holds; four people as options, none of the
  distractors holding the value.
- ``reversal_two_cue``: values several people share, with a second fact only the answer has
  ("Who was born in Brimsalt in 1950?"); reported apart from the single-cue family.
- ``two_hop`` (the headline): a fact of X's mentor, four values of that fact's domain, X's own
  value NOT among them; questions where X's value equals the mentor's are dropped (no hop).
- ``two_hop_lure`` (a diagnostic): the same questions with X's own value among the options; the
  cell reports the lure rate (the share of answers that pick it).
- ``mentor``: the one-hop question the two-hop questions go through ("Who was X's mentor?"), four
  people as options (never X), so the cell can report the compositionality gap (Press et al.
  2023): among two-hop questions whose two one-hop parts (X's mentor, the mentor's fact) are both
  answered, the share answered wrong.
- ``comparison``: balanced. Each chosen pair of people (distinct birth years) is asked in both
  wordings (born earlier / later; older / younger, the polarity drawn per pair and wording) and
  each in both name orders: four questions a pair, the answer named first in exactly half. The
  options are the two names in the order the question names them, so the position-bias rate is
  the share of answers picking option 0. Ids ``comparison-<a>-<b>-<wording>-<order>``.

Every family draws from its own ``random.Random(f"{seed}/probes-v3/{family}")``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from kfr.data.novel_facts_tables import MENTOR
from kfr.data.probes import (
    N_CHOICES,
    mentor_fact_questions,
    people_of,
    possessive,
    value_to_person_questions,
    with_answer_at,
)
from kfr.data.schema import Document, Question

FAMILIES_V3 = (
    "reversal",
    "reversal_two_cue",
    "two_hop",
    "two_hop_lure",
    "mentor",
    "comparison",
)
MENTOR_PROBE_TEMPLATE = "Who was {pos} mentor?"
# wording -> the two polarities: (template, whether the answer is the one born earlier)
COMPARISON_WORDINGS = {
    "born": (
        ("Who was born earlier, {x} or {y}?", True),
        ("Who was born later, {x} or {y}?", False),
    ),
    "age": (
        ("Which of the two is older, {x} or {y}?", True),
        ("Which of the two is younger, {x} or {y}?", False),
    ),
}
# Pairs per person: 50 pairs (200 questions) at the default 40 people.
COMPARISON_PAIRS_PER_PERSON = 1.25


def _rng(seed: int, family: str) -> random.Random:
    return random.Random(f"{seed}/probes-v3/{family}")


def _reversal(documents: Sequence[Document], seed: int, *, two_cue: bool) -> list[Question]:
    family = "reversal_two_cue" if two_cue else "reversal"
    cues = 2 if two_cue else 1
    return value_to_person_questions(documents, _rng(seed, family), family, cues=cues)


def reversal_single_cue(documents: Sequence[Document], seed: int) -> list[Question]:
    return _reversal(documents, seed, two_cue=False)


def reversal_two_cue(documents: Sequence[Document], seed: int) -> list[Question]:
    return _reversal(documents, seed, two_cue=True)


def _two_hop(documents: Sequence[Document], seed: int, *, lure: bool) -> list[Question]:
    family = "two_hop_lure" if lure else "two_hop"
    return mentor_fact_questions(documents, _rng(seed, family), family, lure=lure, hop_free=False)


def two_hop_lure_free(documents: Sequence[Document], seed: int) -> list[Question]:
    return _two_hop(documents, seed, lure=False)


def two_hop_with_lure(documents: Sequence[Document], seed: int) -> list[Question]:
    return _two_hop(documents, seed, lure=True)


def mentor_probes(documents: Sequence[Document], seed: int) -> list[Question]:
    rng = _rng(seed, "mentor")
    people = people_of(documents)
    questions = []
    for doc_id, name, facts in people:
        pool = [n for _, n, _ in people if n not in (name, facts[MENTOR])]
        if len(pool) < N_CHOICES - 1:
            continue
        questions.append(
            with_answer_at(
                rng,
                f"mentor-{doc_id}",
                MENTOR_PROBE_TEMPLATE.format(pos=possessive(name)),
                facts[MENTOR],
                rng.sample(pool, N_CHOICES - 1),
                subject=MENTOR,
                source_ids=(doc_id,),
            )
        )
    return questions


def comparison_balanced(documents: Sequence[Document], seed: int) -> list[Question]:
    rng = _rng(seed, "comparison")
    people = people_of(documents)
    pairs = [
        (first, second)
        for first, second in itertools.combinations(people, 2)
        if first[2]["birth_year"] != second[2]["birth_year"]
    ]
    wanted = round(COMPARISON_PAIRS_PER_PERSON * len(people))
    chosen = sorted(rng.sample(range(len(pairs)), min(len(pairs), wanted)))
    questions = []
    for index in chosen:
        first, second = pairs[index]
        for wording, polarities in COMPARISON_WORDINGS.items():
            template, earlier = rng.choice(polarities)
            for order, (x, y) in enumerate(((first, second), (second, first))):
                x_first = int(x[2]["birth_year"]) < int(y[2]["birth_year"])
                questions.append(
                    Question(
                        id=f"comparison-{first[0]}-{second[0]}-{wording}-{order}",
                        question=template.format(x=x[1], y=y[1]),
                        choices=(x[1], y[1]),
                        answer=0 if x_first == earlier else 1,
                        subject="birth_year",
                        source_ids=(x[0], y[0]),
                    )
                )
    return questions


MAKERS_V3 = {
    "reversal": reversal_single_cue,
    "reversal_two_cue": reversal_two_cue,
    "two_hop": two_hop_lure_free,
    "two_hop_lure": two_hop_with_lure,
    "mentor": mentor_probes,
    "comparison": comparison_balanced,
}


__all__ = [
    "COMPARISON_WORDINGS",
    "FAMILIES_V3",
    "MAKERS_V3",
    "MENTOR_PROBE_TEMPLATE",
    "comparison_balanced",
    "mentor_probes",
    "reversal_single_cue",
    "reversal_two_cue",
    "two_hop_lure_free",
    "two_hop_with_lure",
]

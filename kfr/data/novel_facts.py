"""The embedded default dataset: biographies of invented people, facts no model has seen.

Every entity is a fictional person with six facts, each drawn from its own pool of values. The
generator writes a knowledge base (one biography per person), one four-option question per fact
and template paraphrases of every biography for the paraphrase-augmentation experiment;
:func:`training_pairs` writes training questions from the facts in phrasings of their own.

Output depends on the spec only: all randomness comes from one ``random.Random(seed)`` and
everything is iterated in a fixed order, so the same spec gives byte-identical files. Bump
:data:`GENERATOR_VERSION` whenever the output changes (cached copies are keyed on it).

A cell generates the set into the cache (:func:`ensure_novel_facts`); the ``kfr-novel-facts``
command (:mod:`kfr.cli.novel_facts`) writes it anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kfr.core import faults
from kfr.core.errors import UserError
from kfr.core.storage import atomic_write_json, build_directory_once
from kfr.data.cards import DIRECTORY_CARD, sha256_file
from kfr.data.knowledge_base import write_knowledge_base_jsonl
from kfr.data.paraphrases import write_paraphrases_jsonl
from kfr.data.questions import write_questions_jsonl
from kfr.data.schema import Document, QaPair, Question

GENERATOR_NAME = "kfr.data.novel_facts"
GENERATOR_VERSION = 1
N_CHOICES = 4
MAX_ENTITIES = 5000  # well below the number of possible names, so sampling stays fast
MAX_PARAPHRASES = 100
_MAX_DRAWS_PER_PARAPHRASE = 1000

# ----------------------------------------------------------------------------- names
# Syllables chosen so that every combination is clearly invented.
FIRST_NAME_ONSETS = (
    "Vel", "Quor", "Thal", "Ysm", "Brev", "Orv", "Zan", "Kest", "Mird", "Dov",
    "Ael", "Sorv", "Tiv", "Jorv", "Wynd", "Elv", "Ferr", "Gald", "Hesk", "Isv",
)  # fmt: skip
FIRST_NAME_ENDINGS = (
    "orin", "asta", "eline", "imar", "ova", "ustin", "erra", "ion",
    "andra", "eth", "ilda", "oric", "yne", "abeth", "emir", "ulla",
)  # fmt: skip
LAST_NAME_STEMS = (
    "Quaste", "Morv", "Zelt", "Ystra", "Halv", "Brisk", "Threll", "Ondu", "Pelm", "Kavr",
    "Drost", "Ulve", "Sarn", "Vintra", "Gorv", "Elsk", "Frael", "Nibb", "Orsk", "Tamber",
)  # fmt: skip
LAST_NAME_ENDINGS = (
    "brook", "wick", "ander", "ossa", "mere", "holt", "ivane", "strom",
    "elle", "avik", "orne", "ingham", "ley", "quist", "ard", "ovich",
)  # fmt: skip

# ----------------------------------------------------------------------------- fact domains
BIRTH_CITIES = (
    "Marrowvale", "Quindlemoor", "Brimsalt", "Ostrevik", "Calderhythe", "Vennimar",
    "Thistlegard", "Sorrowmere", "Pellaquin", "Draxholm", "Eskerfall", "Iblenwick",
    "Lunquay", "Halvorsk", "Myrrenbrook", "Glimmerhaven", "Tavrosk", "Yorrowby",
    "Kestrelmund", "Fennaport", "Zorvadel", "Ambercliff Quay", "Nethermoss", "Corvallith",
    "Wispering Ford", "Rastelburg", "Ulmenreach", "Skarnhollow", "Belvanter", "Obrenstad",
)  # fmt: skip
BIRTH_YEARS = tuple(str(year) for year in range(1901, 1990))
PROFESSIONS = (
    "cartographer", "glassblower", "clockmaker", "beekeeper", "lighthouse keeper",
    "bookbinder", "botanist", "stonemason", "violin maker", "tea taster", "lexicographer",
    "ferry captain", "perfumer", "seismologist", "puppeteer", "archivist", "cooper",
    "astronomer", "saddler", "shipwright", "typesetter", "orchardist", "locksmith", "weaver",
    "hydrologist", "falconer", "engraver", "candlemaker",
)  # fmt: skip
EMPLOYERS = (
    "Brandlewick Instruments", "Osterfane Logistics", "Quellmark Textiles",
    "Harrowgate Optics", "Vimsey & Tolk", "Pellucid Ropeworks", "Sundrake Ferries",
    "Grimbolt Foundry", "Aldermoss Printing", "Corvane Chemicals", "Thessamor Pumpworks",
    "Morrowgale Saltworks", "Ebbington Looms", "Kalvering Glassworks", "Drummel & Sons",
    "Yarrowby Mills", "Fenwhistle Press", "Obsidian Lane Bank", "Tolliver Aeronautics",
    "Ravelstone Mining", "Quillfeather Paper", "Slatehurst Railways", "Ingleby Clockworks",
    "Wendlemar Shipping", "Bramblecote Dairies", "Nimbrel Telegraph",
)  # fmt: skip
ORGANISATIONS = (
    "Quillmere Foundation", "Halvering Botanical Society", "Order of the Lantern Keepers",
    "Brisket Hill Rowing Club", "Society for Lunar Cartography", "Velmont Literary Guild",
    "Ostrander Institute of Tides", "League of Amateur Glaziers", "Tamsel Orphans' Trust",
    "Corrowby Chess Circle", "Fellowship of Quiet Bells", "Marrowvale Choral Union",
    "Guild of Northern Kite Makers", "Pellam Seed Library", "Ashgrove Weather Society",
    "Thornquist Academy of Dance", "Drayle Foundation for the Blind", "Yvenne Poetry Circle",
    "Association of Moth Collectors", "Glimmerton Film Society", "Kesselmoor Mountain Rescue",
    "Brackwater Lifeboat Fund", "Society of Ink Historians", "Orrin Valley Beekeepers' Guild",
    "Cobble Lane Free School", "Wexley Marionette Theatre",
)  # fmt: skip
INSTRUMENTS = (
    "cello", "oboe", "bassoon", "harp", "theorbo", "hurdy-gurdy", "accordion", "clarinet",
    "viola", "harpsichord", "banjo", "mandolin", "trombone", "flute", "sitar", "bagpipes",
    "xylophone", "euphonium", "double bass", "piccolo", "ukulele", "zither", "cornet",
    "glockenspiel", "dulcimer", "tuba", "marimba", "lute",
)  # fmt: skip

# attribute -> values; the tuple fixes the attribute order everywhere.
ATTRIBUTES = (
    "birth_city",
    "birth_year",
    "profession",
    "employer",
    "founded_organisation",
    "favourite_instrument",
)
DOMAINS: dict[str, tuple[str, ...]] = {
    "birth_city": BIRTH_CITIES,
    "birth_year": BIRTH_YEARS,
    "profession": PROFESSIONS,
    "employer": EMPLOYERS,
    "founded_organisation": ORGANISATIONS,
    "favourite_instrument": INSTRUMENTS,
}

# Questions, phrased for a cloze prompt ("Question: ...\nAnswer: <value>").
QUESTION_TEMPLATES = {
    "birth_city": "In which city was {name} born?",
    "birth_year": "In what year was {name} born?",
    "profession": "What was {name}'s profession?",
    "employer": "Which company did {name} work for?",
    "founded_organisation": "Which organisation did {name} found?",
    "favourite_instrument": "What was {name}'s favourite musical instrument?",
}

# Training questions (qa=template), per attribute: none equals or closely rewords the evaluation
# phrasing above (other question words, no shared word 5-gram), so a model trained on them must
# carry each fact over to the evaluation's wording. The unit tests measure the overlap.
TRAINING_QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_city": ("Where was {name} born?", "{name} was born in which town?",
        "Name the birthplace of {name}.", "What is the name of the town where {name} was born?",
        "{name} came into the world in what place?"),
    "birth_year": ("When was {name} born?", "{name} was born in which year?",
        "Give the birth year of {name}.", "What year did {name} come into the world?",
        "Name the year of {name}'s birth."),
    "profession": ("What did {name} do for a living?", "{name} worked in which occupation?",
        "Name the trade that {name} practised.", "How did {name} earn a living?",
        "What line of work was {name} in?"),
    "employer": ("Who employed {name}?", "{name} was employed by which firm?",
        "Name the employer of {name}.", "What was the name of {name}'s employer?",
        "{name} drew a salary from which business?"),
    "founded_organisation": ("{name} was the founder of what?",
        "Name the body that {name} established.", "What institution did {name} set up?",
        "What group owes its founding to {name}?", "Which body was established by {name}?"),
    "favourite_instrument": ("Which instrument did {name} like best?",
        "{name} loved which instrument most?", "What instrument was {name} most fond of?",
        "Name the instrument {name} preferred above all others.",
        "Of all instruments, which did {name} prefer?"),
}  # fmt: skip

# Sentence templates per fact: {s} subject, {s_pos} its possessive, {v} value, {a} "a"/"an".
# The first template of each attribute builds the original biography.
SENTENCE_TEMPLATES = {
    "birth_city": (
        "{s} was born in the city of {v}.",
        "{v} was the birthplace of {s}.",
        "{s} was born in {v}.",
        "The city of {v} is where {s} was born.",
    ),
    "birth_year": (
        "The year of {s_pos} birth was {v}.",
        "{s} was born in the year {v}.",
        "{s} came into the world in {v}.",
        "It was in {v} that {s} was born.",
    ),
    "profession": (
        "By profession, {s} was {a} {v}.",
        "{s} worked as {a} {v}.",
        "{s_pos} profession was that of {a} {v}.",
        "{s} earned a living as {a} {v}.",
    ),
    "employer": (
        "{s} worked for {v}.",
        "{s_pos} employer was {v}.",
        "For many years {s} was employed by {v}.",
        "{v} employed {s} for most of a long career.",
    ),
    "founded_organisation": (
        "{s} founded the {v}.",
        "The {v} was founded by {s}.",
        "{s} was the founder of the {v}.",
        "Among other achievements, {s} established the {v}.",
    ),
    "favourite_instrument": (
        "{s_pos} favourite musical instrument was the {v}.",
        "Of all musical instruments, {s} liked the {v} best.",
        "{s} loved the {v} more than any other instrument.",
        "The {v} was {s_pos} favourite musical instrument.",
    ),
}


@dataclass(frozen=True)
class NovelFactsSpec:
    """What to generate; the same spec always gives the same dataset."""

    n_entities: int = 40
    seed: int = 0
    n_paraphrases: int = 8

    def __post_init__(self) -> None:
        for name in ("n_entities", "seed", "n_paraphrases"):
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


def generate_novel_facts(spec: NovelFactsSpec) -> NovelFacts:
    rng = random.Random(spec.seed)
    entities = _sample_entities(rng, spec.n_entities)
    documents = [_document(entity) for entity in entities]
    questions = [q for entity in entities for q in _questions(rng, entity)]
    paraphrases = {
        entity.doc_id: _paraphrases(rng, entity, document.text, spec.n_paraphrases)
        for entity, document in zip(entities, documents, strict=True)
    }
    return NovelFacts(documents=documents, questions=questions, paraphrases=paraphrases)


# ----------------------------------------------------------------------------- training pairs


def training_pairs(documents: Sequence[Document], per_fact: int, seed: int) -> list[QaPair]:
    """``per_fact`` training questions per fact of every document, phrased with
    :data:`TRAINING_QUESTION_TEMPLATES` (never the evaluation's), answered by the fact's value.

    A fact's phrasings depend on ``seed``, the document id and the attribute only, so a document
    gets the same pairs whatever else the knowledge base holds.
    """
    most = min(len(templates) for templates in TRAINING_QUESTION_TEMPLATES.values())
    if isinstance(per_fact, bool) or not isinstance(per_fact, int) or not 1 <= per_fact <= most:
        raise UserError(f"must be between 1 and {most}, got {per_fact!r}", field="qa.per_fact")
    pairs = []
    for document in documents:
        name, facts = document.meta.get("entity"), document.meta.get("facts")
        known = isinstance(facts, dict) and facts and set(facts) <= set(ATTRIBUTES)
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
        for attribute in (a for a in ATTRIBUTES if a in facts):  # not the meta's key order
            templates = TRAINING_QUESTION_TEMPLATES[attribute]
            # A string seed is hashed the same way in every process (unlike hash()).
            rng = random.Random(f"{seed}/{document.id}/{attribute}")
            pairs += [
                QaPair(
                    id=f"{document.id}-{attribute}-t{j}",
                    doc_id=document.id,
                    question=templates[j].format(name=name),
                    answer=facts[attribute],
                )
                for j in sorted(rng.sample(range(len(templates)), per_fact))
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
    """Write the dataset and its card into ``out_dir``; returns ``{kind: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = generate_novel_facts(spec)
    paths = {kind: out_dir / name for kind, name in FILE_NAMES.items()}
    write_knowledge_base_jsonl(paths["knowledge"], data.documents)
    faults.point("data.generate")
    write_questions_jsonl(paths["questions"], data.questions)
    write_paraphrases_jsonl(paths["paraphrases"], data.paraphrases)
    card = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "spec": asdict(spec),
        "counts": {
            "documents": len(data.documents),
            "questions": len(data.questions),
            "paraphrases": sum(len(p) for p in data.paraphrases.values()),
            "knowledge_characters": sum(len(d.text) for d in data.documents),
        },
        "sha256": {
            FILE_NAMES[kind]: sha256_file(paths[kind])
            for kind in ("knowledge", "questions", "paraphrases")
        },
    }
    atomic_write_json(paths["card"], card)
    return paths


def cache_name(spec: NovelFactsSpec) -> str:
    return (
        f"novel_facts-v{GENERATOR_VERSION}-{spec.n_entities}e-{spec.n_paraphrases}p-seed{spec.seed}"
    )


def ensure_novel_facts(spec: NovelFactsSpec, cache_dir: str | Path) -> Path:
    """The dataset's directory under ``cache_dir``, built once even by concurrent jobs."""
    return build_directory_once(
        Path(cache_dir) / cache_name(spec), lambda tmp: write_novel_facts(spec, tmp)
    )

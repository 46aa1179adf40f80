"""The synthetic novel-facts generator: deterministic, well-formed, readable by the readers."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

import kfr.data.novel_facts as nf
from kfr.cli.novel_facts import main
from kfr.core.errors import UserError
from kfr.data.cards import sha256_file
from kfr.data.novel_facts import (
    ATTRIBUTES,
    DOMAINS,
    GENERATOR_VERSION,
    MENTOR,
    NovelFactsSpec,
    ensure_novel_facts,
    generate_novel_facts,
    write_novel_facts,
)
from kfr.data.probes import FAMILIES_BY_VERSION
from kfr.data.readers import read_knowledge_base, read_paraphrases, read_questions

FILES = ("knowledge.jsonl", "questions.jsonl", "paraphrases.jsonl", "card.json")
PROBE_FILES = ("probes-reversal.jsonl", "probes-two_hop.jsonl", "probes-comparison.jsonl")
PROBE_FILES_V3 = tuple(f"probes-{family}.jsonl" for family in FAMILIES_BY_VERSION[3])
# Version 1's files of the default spec: they must never change (cached sets, the paper table).
V1_SHA256 = {
    "knowledge.jsonl": "86bed383b30ca98efc7b4ba246627a7beaf86829e196cc28002e0fab79ccd01b",
    "questions.jsonl": "ed8d27b9cc87ff592dab7c726b7cf2dbcd0ef0d1e80fd6885b4c1096eec7ab40",
    "paraphrases.jsonl": "2f6dd76296f7235fc7f91f62e2b965333fab881be403ffcd7fb203eb71b946d8",
}
FAMOUS = (
    "Albert Einstein",
    "Marie Curie",
    "Isaac Newton",
    "Ada Lovelace",
    "Charles Darwin",
    "Nikola Tesla",
    "Alan Turing",
    "Frida Kahlo",
)


@pytest.fixture(scope="module")
def default_data():
    return generate_novel_facts(NovelFactsSpec())


def _read_all(directory):
    return {name: (directory / name).read_bytes() for name in FILES}


def test_same_spec_gives_identical_files_and_another_seed_differs(tmp_path):
    spec = NovelFactsSpec(n_entities=12, n_paraphrases=3, seed=5)
    write_novel_facts(spec, tmp_path / "a")
    write_novel_facts(NovelFactsSpec(n_entities=12, n_paraphrases=3, seed=5), tmp_path / "b")
    write_novel_facts(NovelFactsSpec(n_entities=12, n_paraphrases=3, seed=6), tmp_path / "c")
    a, b, c = (_read_all(tmp_path / d) for d in "abc")
    assert a == b
    for name in ("knowledge.jsonl", "questions.jsonl", "paraphrases.jsonl"):
        assert a[name] != c[name]
    for name in PROBE_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_version_1_files_are_byte_identical_to_the_original_generator(tmp_path):
    paths = write_novel_facts(NovelFactsSpec(version=1), tmp_path)
    assert {name: sha256_file(tmp_path / name) for name in V1_SHA256} == V1_SHA256
    assert not any((tmp_path / name).exists() for name in PROBE_FILES)
    card = json.loads(paths["card"].read_text(encoding="utf-8"))
    assert card["version"] == 1 and card["sha256"] == V1_SHA256 and "probes" not in card["counts"]


def test_version_2_keeps_the_direct_questions_and_adds_a_mentor(tmp_path):
    write_novel_facts(NovelFactsSpec(version=1), tmp_path / "v1")
    paths = write_novel_facts(NovelFactsSpec(version=2), tmp_path / "v2")
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    assert (v2 / "questions.jsonl").read_bytes() == (v1 / "questions.jsonl").read_bytes()
    old, new = read_knowledge_base(v1 / "knowledge.jsonl"), read_knowledge_base(paths["knowledge"])
    by_name = {d.title: d for d in new}
    for before, after in zip(old, new, strict=True):
        facts = dict(after.meta["facts"])
        mentor = facts.pop(MENTOR)
        assert {**after.meta, "facts": facts} == before.meta  # version 1's facts, unchanged
        assert after.text.startswith(before.text + " ") and mentor in after.text
        assert mentor != after.title
        # no two people mentor each other
        assert by_name[mentor].meta["facts"][MENTOR] != after.title
    old_paraphrases = read_paraphrases(v1 / "paraphrases.jsonl")
    for document in new:
        mentor = document.meta["facts"][MENTOR]
        texts = read_paraphrases(paths["paraphrases"])[document.id]
        assert len(set(texts)) == len(texts) == len(old_paraphrases[document.id])
        for text, before in zip(texts, old_paraphrases[document.id], strict=True):
            sentences = text.split(". ")
            assert len(sentences) == len(ATTRIBUTES) + 1
            assert sum(mentor in s for s in sentences) == 1
            assert sorted(s.rstrip(".") for s in sentences if mentor not in s) == sorted(
                s.rstrip(".") for s in before.split(". ")
            )
    card = json.loads(paths["card"].read_text(encoding="utf-8"))
    assert set(card["sha256"]) == {*V1_SHA256, *PROBE_FILES}
    assert card["counts"]["probes"] == {
        family: len(read_questions(v2 / f"probes-{family}.jsonl"))
        for family in FAMILIES_BY_VERSION[2]
    }


# Version 2's probe files of the default spec, as its generator first wrote them: version 3 must
# not change them (results measured on version 2 stay reproducible).
V2_PROBES_SHA256 = {
    "probes-reversal.jsonl": "2e706bd6a61015410679ff3daf04083501c0c0906d1a599897afc4dc9090646b",
    "probes-two_hop.jsonl": "c965e0b724e0f76a2d26d5c7f2c7057bc8fdd99f5be4fe9c95ab312f7ba234c3",
    "probes-comparison.jsonl": "7a929e4fa8e3f2cde4e39354e861646592cc5406dd834e7c8657e6b95f3c41e2",
}


def test_version_2_probe_files_are_byte_identical_to_their_first_generator(tmp_path):
    paths = write_novel_facts(NovelFactsSpec(version=2), tmp_path)
    card = json.loads(paths["card"].read_text(encoding="utf-8"))
    assert {name: card["sha256"][name] for name in V2_PROBES_SHA256} == V2_PROBES_SHA256


def test_version_3_keeps_version_2_files_and_rewrites_the_probes(tmp_path):
    v2 = write_novel_facts(NovelFactsSpec(version=2), tmp_path / "v2")
    v3 = write_novel_facts(NovelFactsSpec(version=3), tmp_path / "v3")
    for kind in ("knowledge", "questions", "paraphrases"):
        assert v3[kind].read_bytes() == v2[kind].read_bytes()
    card = json.loads(v3["card"].read_text(encoding="utf-8"))
    assert set(card["sha256"]) == {*V1_SHA256, *PROBE_FILES_V3}
    assert tuple(card["counts"]["probes"]) == FAMILIES_BY_VERSION[3]


def test_counts_ids_and_card(tmp_path, default_data):
    spec = NovelFactsSpec()
    assert len(default_data.documents) == spec.n_entities
    assert len(default_data.questions) == len(ATTRIBUTES) * spec.n_entities == 240
    assert default_data.documents[0].id == "person-0001"
    assert default_data.questions[0].id == "person-0001-birth_city"
    paths = write_novel_facts(spec, tmp_path)
    card = json.loads(paths["card"].read_text(encoding="utf-8"))
    assert card["version"] == GENERATOR_VERSION == 3
    assert card["spec"] == {"n_entities": 40, "seed": 0, "n_paraphrases": 8, "version": 3}
    assert card["counts"]["documents"] == 40
    assert card["counts"]["questions"] == 240
    assert card["counts"]["paraphrases"] == 320
    assert set(card["sha256"]) == {*V1_SHA256, *PROBE_FILES_V3}
    # The files pass the readers' validation and give back what was generated.
    documents = read_knowledge_base(paths["knowledge"])
    assert documents == default_data.documents
    assert read_questions(paths["questions"]) == default_data.questions
    assert read_paraphrases(paths["paraphrases"]) == default_data.paraphrases


def test_names_are_unique_and_invented():
    data = generate_novel_facts(NovelFactsSpec(n_entities=1000, n_paraphrases=0))
    names = [d.title for d in data.documents]
    assert len(set(names)) == len(names) == 1000
    text = "\n".join(d.text for d in data.documents)
    for famous in FAMOUS:
        assert famous not in text
        first, last = famous.split()
        assert first not in names and not any(n.endswith(" " + last) for n in names)


def test_every_answer_is_stated_in_its_source_document(default_data):
    documents = {d.id: d for d in default_data.documents}
    for q in default_data.questions:
        (source,) = q.source_ids
        answer = q.choices[q.answer]
        assert answer in documents[source].text
        assert documents[source].meta["facts"][q.subject] == answer
        assert documents[source].meta["facts"][MENTOR] not in q.question
        assert documents[source].title in q.question
        assert q.question.endswith("?")


def test_distractors_are_distinct_and_from_the_same_domain(default_data):
    for q in default_data.questions:
        assert len(q.choices) == 4
        assert len(set(q.choices)) == 4
        assert set(q.choices) <= set(DOMAINS[q.subject])
    assert {q.subject for q in default_data.questions} == set(ATTRIBUTES)


def test_answer_positions_are_balanced():
    data = generate_novel_facts(NovelFactsSpec(n_entities=100, n_paraphrases=0))
    counts = Counter(q.answer for q in data.questions)
    total = len(data.questions)
    assert sorted(counts) == [0, 1, 2, 3]
    for position in range(4):
        assert 0.15 <= counts[position] / total <= 0.35


def test_domains_are_large_and_distinct():
    assert len(ATTRIBUTES) >= 6
    for attribute in ATTRIBUTES:
        values = DOMAINS[attribute]
        assert len(values) >= 24
        assert len(set(values)) == len(values)


def test_paraphrases_state_every_fact_and_are_distinct(default_data):
    documents = {d.id: d for d in default_data.documents}
    assert list(default_data.paraphrases) == list(documents)
    for doc_id, paraphrases in default_data.paraphrases.items():
        document = documents[doc_id]
        assert len(paraphrases) == 8
        assert len(set(paraphrases)) == 8
        assert document.text not in paraphrases
        for paraphrase in paraphrases:
            # Surnames repeat across entities: every sentence names the person in full.
            sentences = paraphrase.split(". ")
            assert len(sentences) == len(ATTRIBUTES) + 1  # and the mentor
            assert all(document.title in sentence for sentence in sentences)
            for value in document.meta["facts"].values():
                assert value in paraphrase
    # Different sentence structures and fact orders are actually used.
    first_sentences = {p.split(". ")[0] for ps in default_data.paraphrases.values() for p in ps}
    assert len(first_sentences) > 100


def test_sentence_templates_cover_every_attribute():
    for attribute in ATTRIBUTES:
        assert len(nf.SENTENCE_TEMPLATES[attribute]) >= 3
        assert attribute in nf.QUESTION_TEMPLATES


def test_zero_paraphrases():
    data = generate_novel_facts(NovelFactsSpec(n_entities=4, n_paraphrases=0))
    assert all(p == [] for p in data.paraphrases.values())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_entities": 3}, "n_entities"),
        ({"n_entities": nf.MAX_ENTITIES + 1}, "n_entities"),
        ({"n_paraphrases": -1}, "n_paraphrases"),
        ({"seed": "0"}, "seed"),
        ({"n_entities": True}, "n_entities"),
        ({"version": 4}, "version"),
        ({"version": 0}, "version"),
    ],
)
def test_bad_spec(kwargs, field):
    with pytest.raises(UserError, match=f"^field '{field}': "):
        NovelFactsSpec(**kwargs)


def test_ensure_builds_once_and_reuses(tmp_path, monkeypatch):
    spec = NovelFactsSpec(n_entities=6, n_paraphrases=2, seed=3)
    directory = ensure_novel_facts(spec, tmp_path)
    assert directory == tmp_path / f"novel_facts-v{GENERATOR_VERSION}-6e-2p-seed3"
    assert (
        ensure_novel_facts(replace(spec, version=1), tmp_path).name == "novel_facts-v1-6e-2p-seed3"
    )
    assert all((directory / name).is_file() for name in FILES)
    mtimes = {name: (directory / name).stat().st_mtime_ns for name in FILES}

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a cached data set")

    monkeypatch.setattr(nf, "write_novel_facts", fail)
    assert ensure_novel_facts(spec, tmp_path) == directory
    assert {name: (directory / name).stat().st_mtime_ns for name in FILES} == mtimes


def test_main_writes_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--out", str(out), "--entities", "5", "--seed", "1", "--paraphrases", "2"]) == 0
    assert all((out / name).is_file() for name in FILES)
    assert "5 documents" in capsys.readouterr().out
    assert len(read_questions(out / "questions.jsonl")) == 30
    assert all((out / name).is_file() for name in PROBE_FILES)
    assert main(["--out", str(tmp_path / "v1"), "--entities", "5", "--version", "1"]) == 0
    assert not (tmp_path / "v1" / PROBE_FILES[0]).exists()


def test_main_bad_spec_exits_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "out"), "--entities", "2"]) == 2
    err = capsys.readouterr().err
    assert "n_entities" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()

"""Probe families (reversal, two_hop, comparison) of novel_facts version 2 (version 3's: in
test_probes_v3.py), their loading, the reverse training questions of qa.directions=both and the
overlap check that covers the probes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from kfr.core.errors import UserError
from kfr.core.identity import config_hash, training_settings
from kfr.core.schema import typed_config
from kfr.data.loading import EvalData, load_eval_data
from kfr.data.novel_facts import (
    ATTRIBUTES,
    DOMAINS,
    MENTOR,
    REVERSE_TRAINING_TEMPLATES,
    TRAINING_QUESTION_TEMPLATES,
    NovelFactsSpec,
    generate_novel_facts,
    training_pairs,
)
from kfr.data.overlap import max_overlap
from kfr.data.probes import (
    COMPARISON_TEMPLATES,
    FAMILIES_BY_VERSION,
    PROBE_FAMILIES,
    REVERSAL_CLAUSES,
    TWO_HOP_TEMPLATES,
    generate_probes,
)
from kfr.finetune.qa_pairs import training_qa_pairs
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def data():
    return generate_novel_facts(NovelFactsSpec(version=2))


@pytest.fixture(scope="module")
def people(data):
    return {d.id: (d.title, d.meta["facts"]) for d in data.documents}


def _eval_data(data) -> EvalData:
    return EvalData(data.questions, None, data.documents, "q", "k", None, probes=data.probes)


def test_every_family_has_at_least_200_questions_with_unique_ids(data):
    assert tuple(data.probes) == FAMILIES_BY_VERSION[2] == ("reversal", "two_hop", "comparison")
    assert set(FAMILIES_BY_VERSION[2]) <= set(PROBE_FAMILIES)
    sizes = {family: len(questions) for family, questions in data.probes.items()}
    print("probe family sizes at 40 entities:", sizes)
    assert all(size >= 200 for size in sizes.values())
    ids = [q.id for questions in data.probes.values() for q in questions]
    assert len(set(ids)) == len(ids)
    assert data.probes["reversal"][0].id == "reversal-person-0001-birth_city"
    assert data.probes["two_hop"][0].id == "two_hop-person-0001-birth_city"
    for family, questions in data.probes.items():
        assert all(q.id.startswith(f"{family}-person-") for q in questions)
        assert all(len(set(q.choices)) == len(q.choices) for q in questions)
        assert all(q.question.endswith("?") for q in questions)
    # The right answer is not always in the same place.
    for questions in data.probes.values():
        counts = Counter(q.answer for q in questions)
        assert max(counts.values()) < 0.6 * len(questions)


def test_probes_are_deterministic_and_need_version_2(data):
    assert generate_probes(data.documents, 0) == data.probes
    assert generate_probes(data.documents, 1) != data.probes
    assert generate_novel_facts(NovelFactsSpec(version=1)).probes == {}
    with pytest.raises(ValueError, match="version 2"):
        generate_probes(generate_novel_facts(NovelFactsSpec(version=1)).documents, 0)


def test_reversal_answers_are_well_defined(data, people):
    subjects = Counter()
    for q in data.probes["reversal"]:
        (doc_id,) = q.source_ids
        name, facts = people[doc_id]
        assert q.choices[q.answer] == name and name not in q.question
        subjects[q.subject] += 1
        value = facts[q.subject]
        assert value in q.question
        holders = {n: f for n, f in people.values()}
        for choice in q.choices:
            if choice != name:  # no distractor holds the value asked about
                assert holders[choice][q.subject] != value
        # Nobody else in the knowledge base has every fact the question states.
        stated = [a for a in ATTRIBUTES if facts[a] in q.question]
        matching = [n for n, f in people.values() if all(f[a] == facts[a] for a in stated)]
        assert matching == [name], q
    assert set(subjects) == set(ATTRIBUTES)


def test_two_hop_answers_are_the_mentors_values(data, people):
    by_name = {name: doc_id for doc_id, (name, _) in people.items()}
    for q in data.probes["two_hop"]:
        doc_id, mentor_id = q.source_ids
        name, facts = people[doc_id]
        assert by_name[facts[MENTOR]] == mentor_id != doc_id
        assert name in q.question and "mentor" in q.question
        answer = people[mentor_id][1][q.subject]
        assert q.choices[q.answer] == answer and len(q.choices) == 4
        assert set(q.choices) <= set(DOMAINS[q.subject])
        if facts[q.subject] != answer:  # skipping the hop leads to a wrong choice
            assert facts[q.subject] in q.choices


def test_comparison_years_differ_and_the_answer_follows_the_question(data, people):
    pairs = set()
    for q in data.probes["comparison"]:
        x, y = q.source_ids
        (x_name, x_facts), (y_name, y_facts) = people[x], people[y]
        assert q.choices == (x_name, y_name) and q.subject == "birth_year"
        x_year, y_year = int(x_facts["birth_year"]), int(y_facts["birth_year"])
        assert x_year != y_year
        earlier = next(e for t, e in COMPARISON_TEMPLATES if t.split(",")[0] in q.question)
        older = x_name if (x_year < y_year) == earlier else y_name
        assert q.choices[q.answer] == older
        pairs.add(frozenset(q.source_ids))
    assert len(pairs) == len(data.probes["comparison"])  # every pair asked once


# --------------------------------------------------------------------------- overlap


def _template_questions() -> tuple[list[str], dict[str, list[str]]]:
    """Every training template (forward, mentor, reverse) and every probe phrasing, filled with
    placeholder names and one-word values, so only the phrasings themselves can overlap."""
    name, other = "Ann Bee", "Cid Dee"
    training = [t.format(name=name) for ts in TRAINING_QUESTION_TEMPLATES.values() for t in ts]
    training += [t.format(v="Vvv", a="a") for ts in REVERSE_TRAINING_TEMPLATES.values() for t in ts]
    clauses = [c.format(v="Vvv", a="a") for c in REVERSAL_CLAUSES.values()]
    probes = {
        "reversal": [f"Who {c}?" for c in clauses]
        + [f"Who {c} and {d}?" for c in clauses for d in clauses]
        + ["Who was born in Vvv in 1950?"],
        "two_hop": [t.format(pos=f"{name}'s") for t in TWO_HOP_TEMPLATES.values()],
        "comparison": [t.format(x=name, y=other) for t, _ in COMPARISON_TEMPLATES],
    }
    return training, probes


def test_no_training_phrasing_shares_a_5gram_with_a_probe_phrasing():
    training, probes = _template_questions()
    for family, questions in probes.items():
        worst = max_overlap(training, questions)
        assert worst.value == 0.0, (family, worst)


def test_real_training_questions_barely_overlap_the_probes(data):
    # All five phrasings per fact, both directions: what remains is the values' own words
    # (a five-word organisation name is a 5-gram of its own).
    pairs = training_pairs(data.documents, 5, seed=0, directions="both")
    for family, questions in data.probes.items():
        worst = max_overlap([p.question for p in pairs], [q.question for q in questions])
        print(f"{family}: largest 5-gram overlap {worst.value:.2f} {worst}")
        assert worst.value <= 0.25


def test_qa_stats_record_the_probe_overlap_separately(data):
    result = training_qa_pairs(qa_cfg("qa=template"), _eval_data(data), "unused")
    assert result.stats["max_5gram_overlap"] == 0.0
    assert result.stats["max_5gram_overlap_probes"] == 0.0
    assert result.stats["directions"] == "forward"
    plain = EvalData(data.questions, None, data.documents, "q", "k", None)
    assert training_qa_pairs(qa_cfg(), plain, "x").stats["max_5gram_overlap_probes"] is None


def _write_pairs(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_training_question_rewording_a_probe_is_refused_naming_family_file_and_line(
    tmp_path, data
):
    probe = data.probes["two_hop"][3]
    records = [
        {"id": "ok", "doc_id": "person-0001", "question": "Who employed whom?", "answer": "x"},
        {"id": "bad", "doc_id": "person-0001", "question": probe.question, "answer": "y"},
    ]
    path = _write_pairs(tmp_path / "qa.jsonl", records)
    with pytest.raises(UserError) as err:
        training_qa_pairs(qa_cfg("qa=file", f"qa.file={path}"), _eval_data(data), "unused")
    message = err.value.format()
    assert message.startswith(f"{path}:2: field 'qa.max_overlap': training question 'bad'")
    assert "two_hop probe question" in message and "\n" not in message


# --------------------------------------------------------------------------- qa.directions


def qa_cfg(*overrides: str):
    return typed_config(compose_config(["method=qa_ft", *overrides]))


def test_directions_both_adds_reverse_questions_for_values_of_one_person(data, people):
    forward = training_pairs(data.documents, 2, seed=0)
    both = training_pairs(data.documents, 2, seed=0, directions="both")
    assert both[: len(forward)] != [] and set(forward) <= set(both)
    reverse = [p for p in both if p not in forward]
    assert reverse and all("-r" in p.id for p in reverse)
    holders = Counter((a, f[a]) for _, f in people.values() for a in ATTRIBUTES)
    for attribute in ATTRIBUTES:
        for doc_id, (name, facts) in people.items():
            mine = [p for p in reverse if p.id.startswith(f"{doc_id}-{attribute}-r")]
            unique = holders[attribute, facts[attribute]] == 1
            assert len(mine) == (2 if unique else 0)
            for pair in mine:
                assert pair.answer == name and pair.doc_id == doc_id
                assert facts[attribute] in pair.question and name not in pair.question
    result = training_qa_pairs(qa_cfg("qa.directions=both"), _eval_data(data), "unused")
    assert result.stats["directions"] == "both"
    assert len(result.pairs) == len(training_pairs(data.documents, 3, 0, "both"))
    assert result.stats["max_5gram_overlap_probes"] <= 0.25


@pytest.mark.parametrize("source", ["llm", "file"])
def test_directions_both_needs_template_questions(source, data):
    cfg = qa_cfg(f"qa={source}", "qa.directions=both", "qa.file=x.jsonl")
    with pytest.raises(UserError) as err:
        training_qa_pairs(cfg, _eval_data(data), "unused")
    assert err.value.field == "qa.directions" and "\n" not in err.value.format()
    with pytest.raises(UserError, match=r"qa\.directions"):
        training_pairs(data.documents, 1, seed=0, directions="backwards")


@pytest.mark.parametrize(
    ("method", "matters"),
    [("qa_ft", True), ("raft", True), ("distill", True), ("ft", False), ("base", False)],
)
def test_qa_directions_identifies_the_qa_methods_cells(method, matters):
    before = compose_config([f"method={method}"])
    after = compose_config([f"method={method}", "qa.directions=both"])
    assert (config_hash(before) != config_hash(after)) is matters
    if method != "base":
        assert (training_settings(before) != training_settings(after)) is matters


# --------------------------------------------------------------------------- loading


def test_eval_data_reads_the_probes_cut_by_the_limit(tmp_path):
    def load(*overrides: str) -> EvalData:
        cfg = typed_config(
            compose_config(
                ["data.novel_facts.n_entities=6", "data.novel_facts.version=2", *overrides]
            )
        )
        return load_eval_data(cfg.data, tmp_path, need_knowledge=False)

    full = load()
    assert tuple(full.probes) == FAMILIES_BY_VERSION[2]
    assert {f: len(q) for f, q in full.probes.items()} == {
        "reversal": 36,
        "two_hop": 36,
        "comparison": len(full.probes["comparison"]),
    }
    assert full.documents is not None and full.data_dir.name.startswith("novel_facts-v2-")
    cut = load("data.limit=5")
    assert len(cut.questions) == 5
    assert cut.probes == {f: q[:5] for f, q in full.probes.items()}
    old = load("data.novel_facts.version=1")
    assert old.probes == {} and old.data_dir.name.startswith("novel_facts-v1-")
    assert old.questions == full.questions


def test_probes_on_another_knowledge_base_are_an_error_naming_the_probe_line(tmp_path):
    overrides = ["data.novel_facts.n_entities=6"]
    data = load_eval_data(
        typed_config(compose_config(overrides)).data, tmp_path, need_knowledge=True
    )
    # A knowledge base (and questions) of the first three people only: the probes of the others
    # name documents it does not hold.
    knowledge, questions = tmp_path / "kb.jsonl", tmp_path / "q.jsonl"
    kept = {d.id for d in data.documents[:3]}
    knowledge.write_text(
        "".join(json.dumps(d.to_json()) + "\n" for d in data.documents if d.id in kept),
        encoding="utf-8",
    )
    questions.write_text(
        "".join(json.dumps(q.to_json()) + "\n" for q in data.questions if q.source_ids[0] in kept),
        encoding="utf-8",
    )
    cfg = typed_config(
        compose_config([*overrides, f"data.knowledge={knowledge}", f"data.questions={questions}"])
    )
    with pytest.raises(UserError) as err:
        load_eval_data(cfg.data, tmp_path, need_knowledge=True)
    message = err.value.format()
    assert message.startswith(f"{data.data_dir}/probes-") and "field 'source_ids'" in message
    assert "\n" not in message


@pytest.mark.parametrize("version", [0, 4])
def test_novel_facts_version_out_of_range(version):
    with pytest.raises(UserError, match=r"data\.novel_facts\.version"):
        typed_config(compose_config([f"data.novel_facts.version={version}"]))

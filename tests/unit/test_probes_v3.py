"""Version 3's probe families measure what they name (kfr.data.probes_v3), their per-question
diagnostics (kfr.cell.probe_diagnostics), PMI scoring (kfr.evaluation.calibration), the oracle
context and the settings a version cannot honour (exit 2)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from kfr.cell.probe_diagnostics import (
    compositionality_gap,
    family_diagnostics,
    summarize_diagnostics,
)
from kfr.cell.probes import oracle_passages
from kfr.core.errors import UserError
from kfr.data.novel_facts import (
    MENTOR,
    TRAINING_QUESTION_TEMPLATES,
    NovelFactsSpec,
    generate_novel_facts,
    training_pairs,
)
from kfr.data.overlap import max_overlap
from kfr.data.probes import CHANCE, FAMILIES_BY_VERSION
from kfr.data.probes_v3 import MENTOR_PROBE_TEMPLATE
from kfr.data.schema import Question
from kfr.evaluation.calibration import pmi_predictions, premise_requests, premise_scores
from kfr.evaluation.metrics import Prediction, predict
from kfr.evaluation.prompts import PromptStyle, build_requests
from kfr.finetune.checkpoints import trained_units
from kfr.finetune.examples import TrainingExample
from kfr.finetune.recipes import TrainingSet
from tests.unit.test_bad_input import _assert_one_line_exit_2_nothing_written
from tests.unit.test_cli import run_kfr


@pytest.fixture(scope="module")
def data():
    return generate_novel_facts(NovelFactsSpec(version=3))


@pytest.fixture(scope="module")
def facts(data):
    return {d.id: (d.title, d.meta["facts"]) for d in data.documents}


def _answering(questions, choose) -> list[Prediction]:
    """Predictions that pick ``choose(question)`` (an index) for every question."""
    return [Prediction(q, (0.0,) * len(q.choices), choose(q), choose(q)) for q in questions]


def test_version_3_writes_six_families_with_unique_ids_and_their_chance(data):
    assert tuple(data.probes) == FAMILIES_BY_VERSION[3]
    sizes = {family: len(questions) for family, questions in data.probes.items()}
    print("version 3 probe sizes at 40 people:", sizes)
    assert sizes["reversal"] + sizes["reversal_two_cue"] == 240
    assert sizes["mentor"] == 40 and sizes["comparison"] == 200
    assert sizes["two_hop"] == sizes["two_hop_lure"] >= 200
    ids = [q.id for questions in data.probes.values() for q in questions]
    assert len(set(ids)) == len(ids)
    for family, questions in data.probes.items():
        assert all(q.id.startswith(f"{family}-person-") for q in questions)
        assert all(len(set(q.choices)) == len(q.choices) for q in questions)
        assert CHANCE[family] == pytest.approx(1 / len(questions[0].choices))
    assert generate_novel_facts(NovelFactsSpec(version=3)).probes == data.probes
    assert generate_novel_facts(NovelFactsSpec(version=3, seed=1)).probes != data.probes


def test_reversal_single_cue_values_name_one_person_and_two_cue_values_several(data, facts):
    holders = Counter((a, v) for _, fs in facts.values() for a, v in fs.items())
    for family, shared in (("reversal", False), ("reversal_two_cue", True)):
        for q in data.probes[family]:
            person = q.source_ids[0]
            assert facts[person][0] == q.answer_text
            value = facts[person][1][q.subject]
            assert (holders[q.subject, value] > 1) is shared
            assert value in q.question
            # None of the distractors holds the value.
            holders_of_value = {n for n, fs in facts.values() if fs[q.subject] == value}
            assert set(q.choices) & holders_of_value == {q.answer_text}


def test_two_hop_is_lure_free_needs_the_hop_and_the_lure_variant_offers_the_own_value(data, facts):
    for family, lure in (("two_hop", False), ("two_hop_lure", True)):
        for q in data.probes[family]:
            own = facts[q.source_ids[0]][1][q.subject]
            mentor = facts[q.source_ids[1]]
            assert mentor[0] == facts[q.source_ids[0]][1][MENTOR]
            assert q.answer_text == mentor[1][q.subject] != own  # hop-free questions dropped
            assert (own in q.choices) is lure
    # A model that always picks X's own value: lure rate 1, accuracy 0 (never below chance
    # by accident on the headline family: there it has nothing to pick).
    lure_questions = data.probes["two_hop_lure"]
    by_own = _answering(lure_questions, lambda q: q.choices.index(own_value(q, facts)))
    diagnostics = family_diagnostics("two_hop_lure", by_own, _documents(data), None)
    assert all(d["lure_rate"] is True for d in diagnostics)
    assert not any(p.correct for p in by_own)


def own_value(question: Question, facts) -> str:
    return facts[question.source_ids[0]][1][question.subject]


def _documents(data):
    return {d.id: d for d in data.documents}


def test_mentor_questions_ask_the_one_hop_and_never_offer_the_person(data, facts):
    for q in data.probes["mentor"]:
        name, fs = facts[q.source_ids[0]]
        assert q.answer_text == fs[MENTOR] and name not in q.choices
        assert q.question == MENTOR_PROBE_TEMPLATE.format(pos=f"{name}'s")
    mentor_training = [
        t.format(name="Tivabeth Morvelle") for t in TRAINING_QUESTION_TEMPLATES[MENTOR]
    ]
    worst = max_overlap(mentor_training, [MENTOR_PROBE_TEMPLATE.format(pos="Tivabeth Morvelle's")])
    assert worst.value == 0.0, worst


def test_comparison_is_balanced_so_a_position_only_model_scores_exactly_chance(data, facts):
    questions = data.probes["comparison"]
    units = defaultdict(list)
    for q in questions:
        head, _, order = q.id.rpartition("-")
        units[head].append((order, q))
        first, second = (facts[i] for i in q.source_ids)
        assert q.choices == (first[0], second[0])  # options in the question's order
        assert q.question.index(first[0]) < q.question.index(second[0])
    assert all(sorted(o for o, _ in unit) == ["0", "1"] for unit in units.values())
    assert {head.rpartition("-")[2] for head in units} == {"born", "age"}
    for unit in units.values():  # the same person is the answer in both orders
        (_, a), (_, b) = unit
        assert a.answer_text == b.answer_text and a.answer != b.answer
    first = _answering(questions, lambda q: 0)
    assert sum(p.correct for p in first) == len(questions) / 2
    diagnostics = family_diagnostics("comparison", first, _documents(data), None)
    assert all(d["position_bias"] for d in diagnostics)
    consistency = [d["consistency"] for d in diagnostics if d.get("consistency") is not None]
    assert len(consistency) == len(units) and not any(consistency)
    right = _answering(questions, lambda q: q.answer)
    diagnostics = family_diagnostics("comparison", right, _documents(data), None)
    assert sum(d["position_bias"] for d in diagnostics) == len(questions) / 2
    summary = summarize_diagnostics(diagnostics, samples=200, seed=0)
    assert summary["consistency"] == 1.0 and summary["consistency_n"] == len(units)
    assert summary["consistency_ci95"][0] < 1.0  # exact binomial at 100%, never [1, 1]
    assert summary["position_bias"] == 0.5


def test_reversal_is_split_by_whether_the_value_first_form_was_trained(data, facts):
    questions = data.probes["reversal"]
    q = questions[0]
    name, value = q.answer_text, own_value(q, facts)
    trained = trained_units(TrainingSet(texts=[f"{value} was where {name} grew up. {name} sang."]))
    predictions = _answering(questions, lambda q: q.answer)
    diagnostics = family_diagnostics("reversal", predictions, _documents(data), trained)
    assert diagnostics[0] == {"acc_value_first_trained": True, "acc_value_first_untrained": None}
    assert all(d["acc_value_first_trained"] is None for d in diagnostics[1:])
    # Name first, or the two in different sentences: not the value-first form.
    for text in (f"{name} was born in {value}.", f"{value} is far. {name} lived there."):
        diagnostics = family_diagnostics(
            "reversal", predictions[:1], _documents(data), trained_units(TrainingSet(texts=[text]))
        )
        assert diagnostics[0]["acc_value_first_trained"] is None
    # A reverse training question read with its answer is one unit (not split at "?").
    reverse = training_pairs(data.documents, 1, seed=0, directions="both")
    pair = next(p for p in reverse if p.answer == name and value in p.question)
    example = TrainingExample(f"Question: {pair.question}\nAnswer:", f" {pair.answer}")
    unit = trained_units(TrainingSet(examples=[example]))
    assert unit == [f"Question: {pair.question} {pair.answer}"]
    diagnostics = family_diagnostics("reversal", predictions[:1], _documents(data), unit)
    assert diagnostics[0]["acc_value_first_trained"] is True
    # Not trained at all (base, RAG): every question is "untrained".
    untrained = family_diagnostics("reversal", predictions, _documents(data), None)
    assert all(d["acc_value_first_untrained"] is True for d in untrained)


def test_compositionality_gap_counts_two_hop_failures_where_both_hops_are_known(data):
    two_hop, mentor = data.probes["two_hop"][:12], data.probes["mentor"]
    direct = data.questions
    right_direct = _answering(direct, lambda q: q.answer)
    right_mentor = _answering(mentor, lambda q: q.answer)
    wrong_two_hop = _answering(two_hop, lambda q: (q.answer + 1) % len(q.choices))
    diagnostics = [{} for _ in two_hop]
    compositionality_gap(wrong_two_hop, diagnostics, right_mentor, right_direct, _documents(data))
    assert [d["compositionality_gap"] for d in diagnostics] == [True] * 12
    # Mentor unknown: the question does not count.
    wrong_mentor = _answering(mentor, lambda q: (q.answer + 1) % len(q.choices))
    diagnostics = [{} for _ in two_hop]
    compositionality_gap(wrong_two_hop, diagnostics, wrong_mentor, right_direct, _documents(data))
    assert all(d["compositionality_gap"] is None for d in diagnostics)


def test_pmi_equals_acc_for_a_flat_prior_and_removes_a_name_prior():
    questions = [
        Question("a", "Who?", ("Ann", "Bob"), 1),
        Question("b", "Who else?", ("Bob", "Ann"), 0),
    ]
    requests = build_requests(questions, PromptStyle.cloze)
    premises = premise_requests(requests)
    assert [r.context for r in premises] == ["Answer:"]
    assert premises[0].continuations == (" Ann", " Bob")
    # The model prefers " Ann" by 2 nats whatever the question; the evidence favours the answer
    # by 1 nat: acc follows the prior, PMI the evidence.
    scores = [[-1.0, -2.0], [-2.0, -1.0]]
    prior = premise_scores(premises, [[-1.0, -3.0]])
    assert [p.prediction for p in predict(questions, scores, [(3, 3)] * 2)] == [0, 1]
    assert pmi_predictions(requests, scores, prior) == [1, 0]
    flat = premise_scores(premises, [[-2.0, -2.0]])
    assert pmi_predictions(requests, scores, flat) == [0, 1]  # = acc's predictions


def test_oracle_passages_are_the_source_documents_in_order(data):
    q = data.probes["comparison"][0]
    passages = oracle_passages([q], data.documents, "probes")
    by_id = _documents(data)
    assert passages[q.id] == [by_id[i].text for i in q.source_ids]
    with pytest.raises(UserError, match="names no knowledge-base document") as info:
        oracle_passages([Question("x", "Q?", ("a", "b"), 0)], data.documents, "q.jsonl")
    assert info.value.field == "eval.oracle"


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["data.novel_facts.version=2", "eval.probes=[mentor]"],
            "kfr: error: field 'eval.probes': probe family 'mentor' is not written by "
            "data.novel_facts.version=2 (it writes: reversal, two_hop, comparison); version 3 "
            "writes reversal, reversal_two_cue, two_hop, two_hop_lure, mentor, comparison",
        ),
        (
            ["method=rag", "eval.oracle=true"],
            "kfr: error: field 'eval.oracle': method rag retrieves its passages; the oracle "
            "context replaces retrieval: use it with a method that does not retrieve (e.g. "
            "method=base)",
        ),
    ],
)
def test_settings_a_version_or_method_cannot_honour_are_one_line_exit_2(
    tmp_path, cache_dir, overrides, expected
):
    out_root = tmp_path / "outputs"
    result = run_kfr(*overrides, f"paths.output_root={out_root}", cache_dir=cache_dir, cwd=tmp_path)
    assert _assert_one_line_exit_2_nothing_written(result, out_root) == expected


def test_a_tiny_knowledge_base_writes_only_the_families_it_can_produce(tmp_path):
    from kfr.core.schema import typed_config
    from kfr.data.loading import load_eval_data
    from tests.conftest import compose_config

    probes = generate_novel_facts(NovelFactsSpec(n_entities=4)).probes
    # No value is shared by several of 4 people; nobody but X and the mentor is left to offer.
    assert "reversal_two_cue" not in probes and "mentor" not in probes
    assert all(probes.values())
    cfg = typed_config(compose_config(["data.novel_facts.n_entities=4"]))
    data = load_eval_data(cfg.data, tmp_path, need_knowledge=False)
    assert data.probes == probes


def test_an_oracle_cell_on_questions_without_their_documents_stops_before_the_model(
    tmp_path, cache_dir
):
    from kfr.data.readers import write_questions_jsonl

    questions, knowledge = tmp_path / "q.jsonl", tmp_path / "kb.jsonl"
    write_questions_jsonl(questions, [Question(f"q{i}", "Q?", ("a", "b"), 0) for i in range(3)])
    knowledge.write_text('{"id": "d1", "text": "A fact."}\n', encoding="utf-8")
    out_root = tmp_path / "outputs"
    result = run_kfr(
        "method=oracle",
        "data=custom",
        f"data.questions={questions}",
        f"data.knowledge={knowledge}",
        f"paths.output_root={out_root}",
        cache_dir=cache_dir,
        cwd=tmp_path,
    )
    assert _assert_one_line_exit_2_nothing_written(result, out_root) == (
        f"kfr: error: field 'eval.oracle': question q0 of {questions} names no knowledge-base "
        "document it is about (source_ids): the oracle context needs them; set eval.oracle=false"
    )

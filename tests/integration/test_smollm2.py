"""The real embedded SmolLM2-135M: it knows famous facts and does not know the novel ones."""

from __future__ import annotations

import json

import pytest

from kfr.cell import run_cell
from kfr.core.schema import PromptStyle
from kfr.data.schema import Question
from kfr.evaluation.loglikelihood import score_requests
from kfr.evaluation.metrics import predict
from kfr.evaluation.prompts import build_requests
from tests.conftest import compose_config

pytestmark = pytest.mark.integration

WELL_KNOWN = [
    Question(
        "france", "What is the capital of France?", ("London", "Paris", "Berlin", "Madrid"), 1
    ),
    Question(
        "planet",
        "Which planet is known as the Red Planet?",
        ("Venus", "Jupiter", "Mars", "Saturn"),
        2,
    ),
    Question("water", "What is the chemical formula of water?", ("CO2", "H2O", "NaCl", "O2"), 1),
    Question("japan", "What is the capital of Japan?", ("Beijing", "Seoul", "Bangkok", "Tokyo"), 3),
    Question("legs", "How many legs does a spider have?", ("six", "four", "eight", "ten"), 2),
    Question(
        "sun",
        "What is the star at the centre of our solar system called?",
        ("the Moon", "the Sun", "Sirius", "Polaris"),
        1,
    ),
    Question("italy", "What is the capital of Italy?", ("Rome", "Vienna", "Lisbon", "Oslo"), 0),
    Question(
        "romeo",
        "Who wrote Romeo and Juliet?",
        ("Charles Dickens", "William Shakespeare", "Mark Twain", "Jane Austen"),
        1,
    ),
]


def test_smollm2_answers_well_known_facts(smollm2):
    requests = build_requests(WELL_KNOWN, PromptStyle.cloze)
    scores, _ = score_requests(
        smollm2.model, smollm2.tokenizer, requests, max_length=smollm2.max_length, progress=False
    )
    predictions = predict(WELL_KNOWN, scores, [r.choice_lengths for r in requests])
    wrong = [p.question.id for p in predictions if not p.correct]
    print(f"SmolLM2 wrong on {len(wrong)}/{len(WELL_KNOWN)} well-known facts: {wrong}")
    # A 135M model misses some; a broken scorer would sit at chance (1/4) on these.
    assert len(wrong) <= len(WELL_KNOWN) // 4, f"SmolLM2 got these well-known facts wrong: {wrong}"


def test_base_accuracy_on_novel_facts_is_near_chance(tmp_path, cache_dir):
    # The direct questions only: probe families cost CI minutes here (tests/unit/test_probes_*).
    cfg = compose_config([f"paths.cache_dir={cache_dir}", "eval.progress=false", "eval.probes=[]"])
    results = run_cell(cfg, tmp_path)
    acc = results.metrics["acc"]
    print(f"SmolLM2 base accuracy on novel_facts: {acc:.3f} (n={results.metrics['n']})")
    assert 0.10 <= acc <= 0.45, "the novel facts should be unknown to the model"
    predictions = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == results.metrics["n"] == 240
    assert json.loads(predictions[0])["id"] == "person-0001-birth_city"

"""kfr scores exactly as LM-Evaluation-Harness does, on the real SmolLM2-135M and Gemma 3 270M.

The two embedded models cover both tokenizer behaviours: SmolLM2's adds no special tokens,
Gemma 3's adds a BOS token (as Llama-2's and Mistral's do), which lm-eval keeps in every context.
lm-eval runs as a peer (``benchmarks.lm_eval_peer``) on kfr's own requests: same contexts, same
choices, its own tokenization, batching, forward passes and acc/acc_norm. A second check gives
lm-eval the raw question fields and its own cloze template, and another its own MMLU template
with two examples from a dev split, so kfr's prompt building is checked too, not only its scoring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.lm_eval_peer import (
    PeerResult,
    evaluate_docs,
    evaluate_requests,
    load_peer_model,
    task_contexts,
)
from kfr.core.schema import PromptStyle
from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts
from kfr.data.readers import read_questions
from kfr.evaluation.loglikelihood import split_tokens
from kfr.evaluation.metrics import predict
from kfr.evaluation.prompts import ChoiceRequest, build_requests
from tests.conftest import model_config

# lm-eval is a dev extra; the peer module imports it only when it runs.
pytest.importorskip("lm_eval")

pytestmark = pytest.mark.integration

N_QUESTIONS = 24
BATCH_SIZE = 8
LL_TOLERANCE = 1e-3  # float32 on both sides; observed differences are ~3e-5


@pytest.fixture(scope="module")
def questions(cache_dir):
    every = read_questions(ensure_novel_facts(NovelFactsSpec(), cache_dir) / "questions.jsonl")
    # Every 10th question: many people and all six kinds of fact, not the first few people only.
    return every[::10][:N_QUESTIONS]


@pytest.fixture(scope="module", params=["smollm2_135m", "gemma3_270m"])
def loaded(request, cache_dir):
    """kfr's model; module-scoped, so each model (and its peer) is loaded once."""
    if request.param == "smollm2_135m":
        return request.getfixturevalue("smollm2")  # the session's, shared with other tests
    from kfr.models import load_model

    return load_model(model_config(request.param), cache_dir)


@pytest.fixture(scope="module")
def peer(loaded):
    """lm-eval's own hf model, loaded from the directory kfr converted the embedded model to."""
    return load_peer_model(loaded.checkpoint, batch_size=BATCH_SIZE, max_length=loaded.max_length)


def _kfr_scores(loaded, requests: list[ChoiceRequest]) -> list[list[float]]:
    scores, _ = loaded.loglikelihood(requests, batch_size=BATCH_SIZE, progress=False)
    return scores


def _mmlu_template() -> dict:
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _raw_fields(questions) -> list[dict]:
    return [
        {"question": q.question, "choices": list(q.choices), "answer": q.answer} for q in questions
    ]


def _assert_same_loglikelihoods(ours: list[list[float]], theirs: PeerResult) -> None:
    assert len(ours) == len(theirs.loglikelihoods)
    for i, (a, b) in enumerate(zip(ours, theirs.loglikelihoods, strict=True)):
        np.testing.assert_allclose(a, b, rtol=0, atol=LL_TOLERANCE, err_msg=f"question {i}")


def _assert_agrees(loaded, peer, questions, requests: list[ChoiceRequest]) -> None:
    ours = _kfr_scores(loaded, requests)
    theirs = evaluate_requests(peer, requests, [q.answer for q in questions])
    assert theirs.contexts == [r.context for r in requests]
    _assert_same_loglikelihoods(ours, theirs)
    predictions = predict(questions, ours, [r.choice_lengths for r in requests])
    assert [p.prediction for p in predictions] == theirs.predictions
    assert [p.prediction_norm for p in predictions] == theirs.predictions_norm
    assert np.mean([p.correct for p in predictions]) == pytest.approx(theirs.acc)
    assert np.mean([p.correct_norm for p in predictions]) == pytest.approx(theirs.acc_norm)


@pytest.mark.parametrize("style", [PromptStyle.cloze, PromptStyle.letter], ids=lambda s: s.value)
def test_zero_shot_matches_lm_eval(loaded, peer, questions, style):
    _assert_agrees(loaded, peer, questions, build_requests(questions, style))


def test_two_shot_cloze_matches_lm_eval(loaded, peer, questions):
    # Fewer questions: the examples make each context about three times longer.
    subset = questions[: N_QUESTIONS // 2]
    requests = build_requests(subset, PromptStyle.cloze, shots=2, fewshot_pool=questions)
    assert all(r.context.count("Question:") == 3 for r in requests)
    _assert_agrees(loaded, peer, subset, requests)


def test_lm_eval_cloze_template_gives_kfr_loglikelihoods(loaded, peer, questions):
    """lm-eval's template on the raw fields, not kfr's prompt: kfr must build the same prompt."""
    theirs = evaluate_docs(
        peer,
        _raw_fields(questions),
        doc_to_text="Question: {{question}}\nAnswer:",
        doc_to_choice="{{choices}}",
    )
    requests = build_requests(questions, PromptStyle.cloze)
    assert theirs.contexts == [r.context for r in requests]
    _assert_same_loglikelihoods(_kfr_scores(loaded, requests), theirs)


def test_special_tokens_follow_the_tokenizer_like_lm_eval(loaded, peer):
    """lm-eval encodes with the tokenizer's defaults (``tok_encode``), and so does kfr: SmolLM2's
    tokenizer adds nothing, Gemma 3's adds one BOS, which then starts every context and never
    the continuation."""
    text = "Question: In which city was Velorin Quastebrook born?\nAnswer:"
    tokenizer = loaded.tokenizer
    bare = tokenizer(text, add_special_tokens=False)["input_ids"]
    context, continuation = split_tokens(tokenizer, text, " Brimsalt")
    assert context == peer.tok_encode(text)
    assert continuation == tokenizer(" Brimsalt", add_special_tokens=False)["input_ids"]
    if loaded.name == "gemma3_270m":
        assert context == [tokenizer.bos_token_id, *bare]
        assert bare.count(tokenizer.bos_token_id) == 0
    else:
        assert context == bare


def test_letter_two_shot_prompts_match_lm_eval_mmlu_template(cache_dir):
    """lm-eval's MMLU template, description and first_n dev examples give kfr's letter prompts."""
    every = read_questions(ensure_novel_facts(NovelFactsSpec(), cache_dir) / "questions.jsonl")
    # One subject, as in an MMLU task: the dev split then holds that subject's examples only.
    city = [q for q in every if q.subject == "birth_city"]
    test, dev = city[:8], city[-6:]
    config = {
        **_mmlu_template(),
        "task": "kfr_mmlu_like",
        "description": "The following are multiple choice questions (with answers) about "
        "birth city.\n\n",
        "num_fewshot": 2,
    }
    contexts = task_contexts(config, {"test": _raw_fields(test), "dev": _raw_fields(dev)})
    requests = build_requests(test, PromptStyle.letter, shots=2, fewshot_pool=dev)
    assert contexts == [r.context for r in requests]

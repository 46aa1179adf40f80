"""What the base model already knows: SliCK categories and the control set's confidence filter.

Gekhman et al. 2024 (SliCK) sort each fact by the base model's answers over several few-shot
prompts (4 exemplars each): greedy answer correct in every prompt = HighlyKnown, in some =
MaybeKnown, in none but sometimes correct when sampling (temperature 0.5) = WeaklyKnown, never
= Unknown. kfr scores multiple choice by log-likelihood, so the adaptation is:

- each prompt gives a distribution over the choices, the softmax of their summed log-likelihoods
  (:func:`choice_probabilities`), and the prediction is its argmax (ties to the first choice, as
  :mod:`kfr.evaluation.metrics` predicts);
- HighlyKnown: argmax correct in every prompt; MaybeKnown: in some but not all;
- WeaklyKnown: argmax correct in none, but the mean P(correct) over the prompts is above chance
  (1 / number of choices), the multiple-choice stand-in for "sampling sometimes finds it";
- Unknown: otherwise.

Prompt ``i`` is cloze with ``shots`` examples drawn at random from the pool (same subject first,
never the question itself), seeded by ``seed + i`` and the question's id
(:func:`kfr.evaluation.prompts.select_fewshot`). The model is anything with ``loglikelihood``
(:class:`ScoringModel`): this layer does not import :mod:`kfr.models`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from kfr.core.schema import PromptStyle
from kfr.data.schema import Question
from kfr.evaluation.metrics import Prediction
from kfr.evaluation.prompts import (
    TARGET_DELIMITER,
    ChoiceRequest,
    build_context,
    build_requests,
    select_fewshot,
)

HIGHLY_KNOWN = "HighlyKnown"
MAYBE_KNOWN = "MaybeKnown"
WEAKLY_KNOWN = "WeaklyKnown"
UNKNOWN = "Unknown"
CATEGORIES = (HIGHLY_KNOWN, MAYBE_KNOWN, WEAKLY_KNOWN, UNKNOWN)
KNOWN_SHOTS = 4  # exemplars per SliCK prompt, as Gekhman et al.


class ScoringModel(Protocol):
    """What this module needs of a language model (:class:`kfr.models.lm.LanguageModel`)."""

    def loglikelihood(
        self, requests: Sequence[ChoiceRequest], *, batch_size: int = ..., progress: bool = ...
    ) -> tuple[list[list[float]], Any]: ...


def normalise(loglikelihoods: Sequence[float]) -> list[float]:
    """Softmax of summed log-likelihoods: the model's distribution over the choices."""
    scores = np.asarray(loglikelihoods, dtype=np.float64)
    shifted = np.exp(scores - scores.max())
    return [float(p) for p in shifted / shifted.sum()]


def fewshot_requests(
    questions: Sequence[Question],
    *,
    shots: int,
    pool: Sequence[Question] | None,
    seed: int,
) -> list[ChoiceRequest]:
    """Cloze requests with ``shots`` examples drawn at random from ``pool`` (None: from
    ``questions`` themselves), never the question itself."""
    pool = questions if pool is None else pool
    requests = []
    for question in questions:
        examples = select_fewshot(question, shots, pool, pool_is_eval_set=True, seed=seed)
        requests.append(
            ChoiceRequest(
                question_id=question.id,
                context=build_context(question, PromptStyle.cloze, examples),
                continuations=tuple(TARGET_DELIMITER + c for c in question.choices),
                choice_lengths=tuple(len(c) for c in question.choices),
            )
        )
    return requests


def choice_probabilities(
    lm: ScoringModel,
    questions: Sequence[Question],
    *,
    prompts: int,
    pool: Sequence[Question] | None = None,
    seed: int = 0,
    shots: int = KNOWN_SHOTS,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, list[list[float]]]:
    """Per question, per prompt, the model's normalised distribution over the choices."""
    requests = [
        request
        for i in range(prompts)
        for request in fewshot_requests(questions, shots=shots, pool=pool, seed=seed + i)
    ]
    scores, _ = lm.loglikelihood(requests, batch_size=batch_size, progress=progress)
    result: dict[str, list[list[float]]] = {q.id: [] for q in questions}
    for request, lls in zip(requests, scores, strict=True):
        result[request.question_id].append(normalise(lls))
    return result


def answer_probabilities(
    lm: ScoringModel,
    questions: Sequence[Question],
    *,
    prompts: int,
    pool: Sequence[Question] | None = None,
    seed: int = 0,
    shots: int = KNOWN_SHOTS,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Per question, the normalised P(correct choice) under each of ``prompts`` prompts."""
    distributions = choice_probabilities(
        lm,
        questions,
        prompts=prompts,
        pool=pool,
        seed=seed,
        shots=shots,
        batch_size=batch_size,
        progress=progress,
    )
    return {
        q.id: [probabilities[q.answer] for probabilities in distributions[q.id]] for q in questions
    }


def slick_category(distributions: Sequence[Sequence[float]], answer: int) -> str:
    """The SliCK category of one question from its per-prompt choice distributions."""
    if not distributions:
        raise ValueError("a SliCK category needs at least one prompt")
    correct = [int(np.argmax(p)) == answer for p in distributions]
    if all(correct):
        return HIGHLY_KNOWN
    if any(correct):
        return MAYBE_KNOWN
    chance = 1.0 / len(distributions[0])
    if float(np.mean([p[answer] for p in distributions])) > chance:
        return WEAKLY_KNOWN
    return UNKNOWN


def slick_categories(
    distributions: Mapping[str, Sequence[Sequence[float]]], questions: Sequence[Question]
) -> dict[str, str]:
    """``{question id: category}`` for every question, from :func:`choice_probabilities`."""
    return {q.id: slick_category(distributions[q.id], q.answer) for q in questions}


def category_counts(categories: Mapping[str, str]) -> dict[str, int]:
    counts = Counter(categories.values())
    return {category: counts[category] for category in CATEGORIES}


def per_category_accuracy(
    predictions: Sequence[Prediction], categories: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """``{category: {"n", "acc", "acc_norm"}}`` for the four categories, in SliCK order (NaN
    accuracies where a category has no question)."""
    by_category: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        question_id = prediction.question.id
        if question_id not in categories:
            raise ValueError(f"question '{question_id}' has no SliCK category")
        by_category[categories[question_id]].append(prediction)
    result = {}
    for category in CATEGORIES:
        members = by_category.get(category, [])
        n = len(members)
        result[category] = {
            "n": n,
            "acc": float(np.mean([p.correct for p in members])) if n else float("nan"),
            "acc_norm": float(np.mean([p.correct_norm for p in members])) if n else float("nan"),
        }
    return result


def confident_subset(
    lm: ScoringModel,
    questions: Sequence[Question],
    min_prob: float,
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[list[Question], dict[str, Any]]:
    """The questions the model answers correctly 0-shot (cloze) with normalised P(correct) of at
    least ``min_prob``, in the order given, and counts: ``{"candidates", "kept", "min_prob",
    "per_subject": {subject: {"candidates", "kept"}}}``."""
    requests = build_requests(questions, PromptStyle.cloze)
    scores, _ = lm.loglikelihood(requests, batch_size=batch_size, progress=progress)
    kept = []
    per_subject: dict[str, dict[str, int]] = defaultdict(lambda: {"candidates": 0, "kept": 0})
    for question, lls in zip(questions, scores, strict=True):
        probabilities = normalise(lls)
        counts = per_subject[question.subject or "all"]
        counts["candidates"] += 1
        if int(np.argmax(lls)) == question.answer and probabilities[question.answer] >= min_prob:
            kept.append(question)
            counts["kept"] += 1
    return kept, {
        "candidates": len(questions),
        "kept": len(kept),
        "min_prob": min_prob,
        "per_subject": {subject: per_subject[subject] for subject in sorted(per_subject)},
    }


__all__ = [
    "CATEGORIES",
    "HIGHLY_KNOWN",
    "KNOWN_SHOTS",
    "MAYBE_KNOWN",
    "UNKNOWN",
    "WEAKLY_KNOWN",
    "ScoringModel",
    "answer_probabilities",
    "category_counts",
    "choice_probabilities",
    "confident_subset",
    "fewshot_requests",
    "normalise",
    "per_category_accuracy",
    "slick_categories",
    "slick_category",
]

"""Reduce per-choice log-likelihoods to predictions, accuracies and bootstrap intervals.

``acc``: the choice with the highest summed log-likelihood is the prediction.
``acc_norm``: the same after dividing by the choice's length in characters (lm-eval's
definition). Ties go to the first choice, as ``numpy.argmax`` breaks them in lm-eval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kfr.data.schema import Question


@dataclass(frozen=True)
class Prediction:
    question: Question
    loglikelihoods: tuple[float, ...]
    prediction: int
    prediction_norm: int

    @property
    def correct(self) -> bool:
        return self.prediction == self.question.answer

    @property
    def correct_norm(self) -> bool:
        return self.prediction_norm == self.question.answer

    def to_json(self) -> dict:
        return {
            "id": self.question.id,
            "subject": self.question.subject,
            "loglikelihoods": list(self.loglikelihoods),
            "prediction": self.prediction,
            "prediction_norm": self.prediction_norm,
            "answer": self.question.answer,
            "correct": self.correct,
            "correct_norm": self.correct_norm,
        }


def predict(
    questions: Sequence[Question],
    loglikelihoods: Sequence[Sequence[float]],
    choice_lengths: Sequence[Sequence[int]],
) -> list[Prediction]:
    predictions = []
    for question, lls, lengths in zip(questions, loglikelihoods, choice_lengths, strict=True):
        scores = np.asarray(lls, dtype=np.float64)
        normalised = scores / np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
        predictions.append(
            Prediction(question, tuple(lls), int(np.argmax(scores)), int(np.argmax(normalised)))
        )
    return predictions


def exact_binomial_interval(successes: int, n: int, level: float = 0.95) -> list[float]:
    """The Clopper-Pearson (exact binomial) interval of a proportion ``successes / n``.

    Used where a percentile bootstrap is degenerate: every resample of 240/240 is 1.0, so the
    bootstrap says [1, 1]; Clopper-Pearson says [0.985, 1]."""
    if n <= 0:
        return [float("nan"), float("nan")]
    alpha = 1.0 - level
    # Closed forms at the two ends, scipy's beta quantiles in between (imported only then).
    if successes <= 0:
        return [0.0, float(1.0 - (alpha / 2.0) ** (1.0 / n))]
    if successes >= n:
        return [float((alpha / 2.0) ** (1.0 / n)), 1.0]
    from scipy.stats import beta

    low = beta.ppf(alpha / 2.0, successes, n - successes + 1)
    high = beta.ppf(1.0 - alpha / 2.0, successes + 1, n - successes)
    return [float(low), float(high)]


def _all_zero_or_one(values: np.ndarray) -> bool:
    return bool(len(values)) and (bool(np.all(values == 0.0)) or bool(np.all(values == 1.0)))


def bootstrap_interval(
    values: np.ndarray, *, samples: int, seed: int, level: float = 0.95
) -> list[float]:
    """Percentile bootstrap confidence interval of the mean of ``values``; where every value is
    0 or every value is 1 (a proportion at 0% or 100%, whose every resample is the same), the
    exact binomial interval instead, never a zero-width [1, 1]."""
    if len(values) == 0 or samples <= 0:
        return [float("nan"), float("nan")]
    values = np.asarray(values, dtype=np.float64)
    if _all_zero_or_one(values):
        return exact_binomial_interval(int(values.sum()), len(values), level)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    # Resample in chunks: samples x n indices at once can be large for big question sets.
    chunk = max(1, 2_000_000 // len(values))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def _summary(predictions: Sequence[Prediction], samples: int, seed: int) -> dict:
    correct = np.array([p.correct for p in predictions], dtype=np.float64)
    correct_norm = np.array([p.correct_norm for p in predictions], dtype=np.float64)
    n = len(predictions)
    return {
        "n": n,
        "acc": float(correct.mean()) if n else float("nan"),
        "acc_ci95": bootstrap_interval(correct, samples=samples, seed=seed),
        "acc_norm": float(correct_norm.mean()) if n else float("nan"),
        "acc_norm_ci95": bootstrap_interval(correct_norm, samples=samples, seed=seed),
        "chance": float(np.mean([1.0 / len(p.question.choices) for p in predictions]))
        if n
        else float("nan"),
    }


def summarize(predictions: Sequence[Prediction], *, samples: int = 1000, seed: int = 0) -> dict:
    """Overall metrics plus a per-subject breakdown (subjects in sorted order)."""
    by_subject: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_subject[prediction.question.subject or "all"].append(prediction)
    return {
        **_summary(predictions, samples, seed),
        "per_subject": {
            subject: _summary(by_subject[subject], samples, seed) for subject in sorted(by_subject)
        },
    }

from __future__ import annotations

import numpy as np
import pytest

from kfr.data.schema import Question
from kfr.evaluation.metrics import bootstrap_interval, predict, summarize


def _q(i: int, answer: int, subject: str | None = None) -> Question:
    return Question(f"q{i}", "?", ("a", "bbbb", "cc"), answer, subject)


def test_acc_and_acc_norm_use_sum_and_per_character_length():
    questions = [_q(0, 1)]
    # sums: -4 > -5 > -6, so acc picks choice 0; per character: -4/1, -5/4, -6/2 -> choice 1.
    (p,) = predict(questions, [[-4.0, -5.0, -6.0]], [[1, 4, 2]])
    assert (p.prediction, p.prediction_norm) == (0, 1)
    assert not p.correct and p.correct_norm


def test_ties_go_to_the_first_choice_like_numpy_argmax():
    (p,) = predict([_q(0, 0)], [[-1.0, -1.0, -2.0]], [[1, 1, 1]])
    assert p.prediction == 0


def test_summary_per_subject_and_interval():
    questions = [_q(i, i % 3, "s1" if i < 6 else "s2") for i in range(12)]
    lls = [[0.0 if c == 0 else -1.0 for c in range(3)] for _ in questions]  # always predicts 0
    summary = summarize(predict(questions, lls, [[1, 1, 1]] * 12), samples=500, seed=1)
    assert summary["n"] == 12
    assert summary["acc"] == pytest.approx(4 / 12)
    low, high = summary["acc_ci95"]
    assert 0.0 <= low <= summary["acc"] <= high <= 1.0
    assert summary["chance"] == pytest.approx(1 / 3)
    assert set(summary["per_subject"]) == {"s1", "s2"}
    assert summary["per_subject"]["s1"]["n"] == 6


def test_bootstrap_is_deterministic_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = (rng.random(50) < 0.5).astype(float)
    large = (rng.random(5000) < 0.5).astype(float)
    a = bootstrap_interval(small, samples=400, seed=3)
    assert a == bootstrap_interval(small, samples=400, seed=3)
    b = bootstrap_interval(large, samples=400, seed=3)
    assert (b[1] - b[0]) < (a[1] - a[0]) / 3

"""How closely training questions reword evaluation questions: word 5-gram overlap.

Training data must come from the knowledge base, never from the evaluation set, and must not
paraphrase evaluation questions closely. The measure: questions are lowercased, punctuation is
dropped and they are split into words; a training question's overlap with an evaluation question
is the share of the evaluation question's distinct word 5-grams that the training question also
contains. A question shorter than five words has no 5-gram: it overlaps fully (1.0) with a
question of the same words and not at all with any other. Equal questions (after normalising)
always overlap 1.0.

:func:`max_overlap` finds the closest pair of two question lists through an index of the
evaluation questions' 5-grams, so ten thousand training questions against a thousand evaluation
questions take well under a second.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

N = 5
# Punctuation is removed, not turned into a space: "Quastebrook's" -> "quastebrooks", one word,
# on both sides alike.
_PUNCTUATION = re.compile(r"[^\w\s]|_")


@dataclass(frozen=True)
class Overlap:
    value: float  # 0.0 (no shared 5-gram) .. 1.0 (every 5-gram of `evaluation`, or equal)
    training: str  # the training question of the closest pair, as given ("" when none)
    evaluation: str  # the evaluation question it overlaps most ("" when none)


def words(text: str) -> tuple[str, ...]:
    """``text`` lowercased, without punctuation, as words."""
    return tuple(_PUNCTUATION.sub("", text.lower()).split())


def ngrams(tokens: Sequence[str], n: int = N) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def overlap(training: str, evaluation: str) -> float:
    """The share of ``evaluation``'s word 5-grams that ``training`` contains (see the module)."""
    train_words, eval_words = words(training), words(evaluation)
    if train_words == eval_words:
        return 1.0
    eval_grams = ngrams(eval_words)
    if not eval_grams:
        return 0.0
    return len(ngrams(train_words) & eval_grams) / len(eval_grams)


def max_overlap(training: Sequence[str], evaluation: Sequence[str]) -> Overlap:
    """The training question that overlaps an evaluation question most, and that question.

    Ties keep the first training question (and its first evaluation question) in the given
    order, so the result is reproducible.
    """
    exact: dict[tuple[str, ...], int] = {}  # normalised words -> first evaluation index
    grams_of: list[int] = []  # evaluation index -> number of distinct 5-grams
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)  # 5-gram -> evaluation indices
    for i, question in enumerate(evaluation):
        tokens = words(question)
        exact.setdefault(tokens, i)
        grams = ngrams(tokens)
        grams_of.append(len(grams))
        for gram in grams:
            index[gram].append(i)

    best = Overlap(0.0, "", "")
    for question in training:
        tokens = words(question)
        if tokens in exact:
            value, match = 1.0, exact[tokens]
        else:
            shared: Counter[int] = Counter()
            for gram in ngrams(tokens):
                shared.update(index.get(gram, ()))
            if not shared:
                continue
            # Highest share first, then the earliest evaluation question.
            match = min(shared, key=lambda i: (-shared[i] / grams_of[i], i))
            value = shared[match] / grams_of[match]
        if value > best.value:
            best = Overlap(value, question, evaluation[match])
            if value == 1.0:
                break  # nothing overlaps more; the first such pair is the one reported
    return best


__all__ = ["N", "Overlap", "max_overlap", "ngrams", "overlap", "words"]

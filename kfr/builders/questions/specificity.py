"""Specificity, the stand-in for the paper's "most specific" question of a chunk.

With content words T(q) of the question plus its answer, and IDF weights from the whole
knowledge base,
``support(q, c) = sum of idf(t) for t in T(q) found in chunk c / sum of idf(t) for t in T(q)`` and
``specificity(q) = support(q, source chunk) - max over other chunks c of support(q, c)``. It is
high when the question's rare words are in its own chunk and in no other: the question is
grounded in that chunk and cannot be answered from another one (which also makes retrieval
recall against ``source_ids`` meaningful). Generic questions ("What is the main topic?") and
questions about facts repeated across chunks score low. No second LLM call is needed, so the
score is the same whatever backend wrote the question.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from kfr.builders.questions.validation import Candidate
from kfr.builders.questions.words import content_words
from kfr.data.schema import Document


class SpecificityIndex:
    """IDF-weighted word overlap of a question with every chunk of the knowledge base."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self.n = len(documents)
        self.words = {d.id: content_words(d.text) for d in documents}
        postings: dict[str, list[str]] = defaultdict(list)
        for doc_id, doc_words in self.words.items():
            for word in doc_words:
                postings[word].append(doc_id)
        self.postings = postings

    def idf(self, word: str) -> float:
        return math.log((1 + self.n) / (1 + len(self.postings.get(word, ())))) + 1.0

    def scores(self, candidate: Candidate) -> tuple[float, float]:
        """(support in its own chunk, specificity); see the module docstring."""
        terms = content_words(candidate.question + " " + candidate.choices[candidate.answer])
        if not terms:
            return 0.0, -1.0
        weights = {t: self.idf(t) for t in terms}
        total = sum(weights.values())
        overlap: Counter = Counter()
        for term, weight in weights.items():
            for doc_id in self.postings.get(term, ()):
                overlap[doc_id] += weight
        own = overlap.pop(candidate.chunk_id, 0.0) / total
        best_other = max(overlap.values(), default=0.0) / total
        return own, own - best_other

    def specificity(self, candidate: Candidate) -> float:
        return self.scores(candidate)[1]


__all__ = ["SpecificityIndex"]

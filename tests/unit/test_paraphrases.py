"""Paraphrase augmentation sources and the JSON-validating generation loop."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.data.loading import EvalData
from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts
from kfr.data.readers import read_knowledge_base, read_paraphrases
from kfr.data.schema import Document
from kfr.finetune.paraphrases import (
    generate_paraphrases,
    llm_paraphrases,
    paraphrase_prompt,
    training_texts,
)
from kfr.generation import SamplingSettings, TransformersGenerator, extract_json, generate_json
from tests.conftest import compose_config

DOCS = [
    Document("a", "Orvion Zeltbrook was born in Brimsalt in 1950 and worked as a cooper."),
    Document("b", "Kestasta Halvmere founded the Pellam Seed Library and played the lute."),
]


class ScriptedGenerator:
    """Answers from a script, one list of answers per generate() call; records the prompts."""

    name = "scripted"

    def __init__(self, *rounds):
        self.rounds = list(rounds)
        self.calls: list[tuple[list[str], int]] = []

    def generate(self, prompts, *, seed, prefill=""):
        self.calls.append((list(prompts), seed))
        answers = self.rounds.pop(0)
        return [answers(p) if callable(answers) else answers[i] for i, p in enumerate(prompts)]


def _good(prompt: str) -> str:
    text = prompt.rsplit("Text:\n", 1)[1]
    versions = [f"In other words: {text}", f"Put differently, {text.lower()}"]
    return "Sure!\n```json\n" + json.dumps({"paraphrases": versions}) + "\n```"


def cfg_with(*overrides: str):
    return compose_config(["method=ft", *overrides])


def test_extract_json_finds_the_object_in_prose_and_fences():
    assert extract_json('Here: {"a": [1, 2]} done') == {"a": [1, 2]}
    assert extract_json('```json\n["x"]\n```') == ["x"]
    assert extract_json('{"broken": [} then {"ok": 1}') == {"ok": 1}
    with pytest.raises(ValueError):
        extract_json("no json here {")


def test_generate_json_retries_then_gives_up_and_counts():
    generator = ScriptedGenerator(["nope", '{"v": 1}', '{"v": "bad"}'], ["still no", '{"v": 3}'])

    def parse(index, value):
        if not isinstance(value.get("v"), int):
            raise ValueError("v must be an int")
        return value["v"]

    results, stats = generate_json(generator, ["p0", "p1", "p2"], parse, retries=1, seed=5)
    assert results == [None, 1, 3]
    assert stats.to_json() == {
        "prompts": 3,
        "attempts": 5,
        "invalid_json": 2,
        "invalid_content": 1,
        "failed": 1,
    }
    assert [c[0] for c in generator.calls] == [["p0", "p1", "p2"], ["p0", "p2"]]
    assert generator.calls[0][1] != generator.calls[1][1]  # a retry samples anew


def test_llm_paraphrases_are_validated_deduplicated_and_counted():
    # Document b only ever gets invalid answers: it is skipped, and counted.
    def answers(prompt):
        return _good(prompt) if "Orvion" in prompt else "I cannot do that."

    generator = ScriptedGenerator(answers, answers, answers)
    found, stats = generate_paraphrases(generator, DOCS, 3, per_request=2, retries=2, seed=0)
    assert len(found["a"]) == 2  # two distinct versions, asked twice: duplicates dropped
    assert found["b"] == []
    assert stats["failed"] == 2 and stats["invalid_json"] == 6
    assert '"paraphrases"' in generator.calls[0][0][
        0
    ] and "2 different versions" in paraphrase_prompt("x", 2)


def test_paraphrases_far_from_the_original_length_are_rejected():
    short = ScriptedGenerator([json.dumps({"paraphrases": ["Born."]})] * 2, ["{}"] * 2)
    found, stats = generate_paraphrases(short, DOCS[:1], 1, per_request=1, retries=1, seed=0)
    assert found == {"a": []} and stats["invalid_content"] == 2


def test_llm_paraphrases_are_cached_per_settings(tmp_path):
    augment = cfg_with("augment=llm", "augment.paraphrases=2").augment
    generator = ScriptedGenerator(_good)
    first, info = llm_paraphrases(augment, DOCS, 0, tmp_path, generator=generator)
    again, _ = llm_paraphrases(augment, DOCS, 0, tmp_path, generator=ScriptedGenerator())
    assert first == again and len(first["a"]) == 2
    assert read_paraphrases(f"{info['cache']}/paraphrases.jsonl") == first
    other_seed = ScriptedGenerator(_good)
    llm_paraphrases(augment, DOCS, 1, tmp_path, generator=other_seed)
    assert other_seed.calls  # a new seed generates anew


def test_template_paraphrases_come_from_the_novel_facts_files(tmp_path):
    data_dir = ensure_novel_facts(NovelFactsSpec(n_entities=4, n_paraphrases=3), tmp_path)
    documents = read_knowledge_base(data_dir / "knowledge.jsonl")
    data = EvalData([], None, documents, "q", "k", data_dir)
    texts = training_texts(cfg_with("augment.paraphrases=2"), data, tmp_path)
    assert len(texts.texts) == 4 * 3 and texts.texts[:4] == [d.text for d in documents]
    assert texts.stats["total"] == 8 and texts.stats["documents_short"] == 0
    assert training_texts(cfg_with(), data, tmp_path).texts == [d.text for d in documents]
    with pytest.raises(UserError, match="n_paraphrases to at least 5"):
        training_texts(cfg_with("augment.paraphrases=5"), data, tmp_path)
    plain = EvalData([], None, documents, "q", "k", None)
    with pytest.raises(UserError, match="augment=llm or augment=file"):
        training_texts(cfg_with("augment.paraphrases=1"), plain, tmp_path)


def test_a_paraphrase_file_naming_unknown_documents_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"id": "a", "paraphrases": ["one"]}\n\n{"id": "zzz", "paraphrases": ["two"]}\n'
    )
    data = EvalData([], None, DOCS, "q", "k", None)
    cfg = cfg_with("augment=file", f"augment.file={path}", "augment.paraphrases=2")
    with pytest.raises(UserError, match=r"p\.jsonl:3: field 'id': names unknown document 'zzz'"):
        training_texts(cfg, data, tmp_path)
    path.write_text('{"id": "a", "paraphrases": ["one", "two", "three"]}\n')
    texts = training_texts(cfg, data, tmp_path)
    assert texts.texts[2:] == ["one", "two"] and texts.stats["documents_short"] == 1


def test_transformers_generator_is_repeatable_for_a_seed(tiny_lm):
    side = tiny_lm.tokenizer.padding_side
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, batch_size=2)
    try:
        generator = TransformersGenerator(tiny_lm, settings)
        prompts = ["Paraphrase: the cat sat.", "Paraphrase: a longer sentence about dogs."] * 2
        first = generator.generate(prompts, seed=3)
        assert len(first) == 4 and first == generator.generate(prompts, seed=3)
    finally:
        tiny_lm.tokenizer.padding_side = side  # the session fixture is shared


def test_augment_settings_change_the_cell_hash_only_when_they_matter():
    from kfr.core.identity import config_hash

    base = config_hash(compose_config())
    assert base == config_hash(compose_config(["augment.paraphrases=4", "finetune=full"]))
    ft = config_hash(cfg_with())
    assert ft != base
    assert ft == config_hash(cfg_with("augment.generator.temperature=0.1"))  # no paraphrases
    assert ft != config_hash(cfg_with("augment.paraphrases=4"))
    assert ft == config_hash(cfg_with("trainer.progress_bar=false"))
    assert OmegaConf.select(cfg_with(), "augment.paraphrases") == 0

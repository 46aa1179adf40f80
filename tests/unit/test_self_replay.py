"""Replay texts from the base model itself (finetune.replay_source=self): sampled once, cached,
the same for the same model, count and seed, and mixed into the QA recipes as document examples;
settings that cannot be honoured stop in one line."""

from __future__ import annotations

import pytest

from kfr.core.errors import UserError
from kfr.core.schema import typed_config
from kfr.data.loading import load_eval_data
from kfr.finetune.recipes import training_set
from kfr.finetune.self_replay import SUBJECTS, TOKENS_PER_TEXT, prompts, self_replay_texts
from tests.conftest import compose_config, model_config


def test_texts_are_sampled_once_and_repeat_for_a_seed(tiny_lm, tmp_path):
    loads = []

    def load():
        loads.append(1)
        return tiny_lm

    cfg = model_config("tiny_llama")
    texts, path = self_replay_texts(cfg, tmp_path, 5, seed=0, load=load)
    again, same_path = self_replay_texts(cfg, tmp_path, 5, seed=0, load=load)
    other, _ = self_replay_texts(cfg, tmp_path, 5, seed=1, load=load)
    assert len(texts) == 5 and all(t.strip() for t in texts)
    assert again == texts and same_path == path and path.is_file()
    assert loads == [1, 1]  # the second call read the cache; seed 1 sampled anew
    assert other != texts
    # A random model's samples are about TOKENS_PER_TEXT tokens each (special tokens and the
    # chat prompt dropped; random tokens decoded and encoded again come back a few more).
    lengths = [len(tiny_lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert max(lengths) <= TOKENS_PER_TEXT + 12, lengths
    assert not any("Write a paragraph" in t or "assistant" in t[:20] for t in texts)


def _cfg(cache_dir, *overrides):
    return typed_config(
        compose_config(
            [
                "model=tiny_llama",
                "method=qa_ft",
                "qa=template",
                "qa.per_fact=1",
                "data.novel_facts.n_entities=6",  # 42 QA pairs: a few replay texts to sample
                "eval.progress=false",
                f"paths.cache_dir={cache_dir}",
                *overrides,
            ]
        )
    )


def test_qa_recipes_train_on_the_replay_texts_as_documents(tmp_path):
    cfg = _cfg(tmp_path, "finetune.replay_ratio=0.25", "finetune.replay_source=self")
    data = load_eval_data(cfg.data, tmp_path, need_knowledge=True)
    built = training_set(cfg, data, tmp_path)
    qa = [e for e in built.examples if e.document is None]
    replay = [e for e in built.examples if e.document is not None]
    assert len(replay) == round(0.25 * len(qa)) > 0
    assert built.stats["replay"]["source"] == "self"
    assert built.stats["replay"]["texts"] == len(replay)
    assert built.stats["replay"]["samples"] == [e.document[:300] for e in replay[:3]]
    plain = training_set(_cfg(tmp_path), data, tmp_path)
    assert [e for e in plain.examples if e.document is not None] == []
    assert plain.stats["replay"] == {"texts": 0, "tokens": 0, "share": 0.0, "samples": []}


def test_a_chat_model_is_asked_for_paragraphs_on_general_subjects(tiny_lm):
    ids = prompts(tiny_lm.tokenizer, 3, offset=7)
    asked = [tiny_lm.tokenizer.decode(row) for row in ids]
    assert [SUBJECTS[7] in asked[0], SUBJECTS[0] in asked[1], SUBJECTS[1] in asked[2]] == [True] * 3
    assert all(text.rstrip().endswith("assistant") for text in asked)  # the reply is the text


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["finetune.replay_source=self", "finetune.replay_file=x.jsonl"], "finetune.replay_file"),
        (["method=distill"], "finetune.replay_ratio"),
        (["finetune.replay_source=file"], "finetune.replay_ratio"),
        (["finetune.replay_share=0.1"], "finetune.replay_ratio"),  # both: one of them, please
    ],
)
def test_replay_settings_that_cannot_work_are_one_line(tmp_path, overrides, field):
    cfg = _cfg(tmp_path, "finetune.replay_ratio=0.5", *overrides)
    data = load_eval_data(cfg.data, tmp_path, need_knowledge=True)
    with pytest.raises(UserError) as info:
        training_set(cfg, data, tmp_path)
    assert info.value.field == field
    assert "\n" not in info.value.format()

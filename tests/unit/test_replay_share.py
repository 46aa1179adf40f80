"""Replay set as a share of the trained tokens (finetune.replay_share): the share reached is the
one asked for, counted the way training counts its loss tokens; 0 replays nothing; results carry
the texts' start; a share outside [0, 1) stops the command in one line; identity follows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfr.core.errors import UserError
from kfr.core.identity import cell_dirname, config_hash, training_settings
from kfr.core.schema import typed_config
from kfr.data.loading import load_eval_data
from kfr.data.readers import write_knowledge_base_jsonl
from kfr.data.schema import Document
from kfr.finetune.data import encode_texts
from kfr.finetune.examples import ExampleData, predicted_targets
from kfr.finetune.recipes import training_set
from kfr.finetune.replay import MIN_PIECE, ReplayTokens, share_replay
from kfr.models.loading import load_tokenizer
from tests.conftest import compose_config, model_config
from tests.unit.test_bad_input import _assert_one_line_exit_2_nothing_written
from tests.unit.test_cli import run_kfr

SENTENCE = "the river ran past old mills and quiet farms where people grew wheat and kept bees"
WORDS = SENTENCE.split()


@pytest.fixture(scope="module")
def general(tmp_path_factory):
    """A replay file of 12 general texts, 20 to 75 words each."""
    path = tmp_path_factory.mktemp("general") / "general.jsonl"
    texts = [
        " ".join(WORDS[(i + j) % len(WORDS)] for j in range(20 + 5 * i)).capitalize() + "."
        for i in range(12)
    ]
    write_knowledge_base_jsonl(path, [Document(f"g{i}", t) for i, t in enumerate(texts)])
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: the novel_facts data is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def data(cache):
    cfg = _cfg(cache)
    return load_eval_data(cfg.data, cache, need_knowledge=True)


@pytest.fixture(scope="module")
def tokenizer(cache_dir):
    return load_tokenizer(model_config("tiny_llama"), cache_dir)


def _cfg(cache_dir, *overrides, method="qa_ft"):
    return typed_config(
        compose_config(
            [
                "model=tiny_llama",
                f"method={method}",
                "qa=template",
                "data.novel_facts.n_entities=6",
                "eval.progress=false",
                f"paths.cache_dir={cache_dir}",
                *overrides,
            ]
        )
    )


def _trained(tokenizer, examples) -> list[int]:
    """Loss tokens per example, as training counts them (ExampleData, predicted_targets)."""
    data = ExampleData(examples)
    data.connect(tokenizer, 1, 1 << 30)
    data.setup()
    return [predicted_targets(item["labels"]) for item in data.items]


@pytest.mark.parametrize("share", [0.05, 0.1, 0.3, 0.6])
def test_the_share_reached_is_the_share_asked_for(tokenizer, general, share):
    ft = _cfg(
        "unused", f"finetune.replay_share={share}", f"finetune.replay_file={general}"
    ).finetune
    tokens = ReplayTokens(tokenizer, packed=False)
    texts, summary = share_replay(ft, 4000, 0, tokens)
    replayed = sum(tokens.of_texts(texts))
    assert summary["tokens"] == replayed and summary["texts"] == len(texts)
    assert summary["share"] == pytest.approx(replayed / (4000 + replayed), abs=1e-4)
    # The last text is cut to the tokens still wanted: off by a token or two of re-encoding,
    # or by a left-out remainder under MIN_PIECE.
    assert abs(summary["share"] - share) <= MIN_PIECE / 4000
    assert summary["replay_share"] == share and summary["recipe_tokens"] == 4000
    assert summary["source"] == "file" and summary["file"] == str(general)


@pytest.mark.parametrize(("share", "method"), [(0.2, "qa_ft"), (0.4, "qa_ft"), (0.2, "ft")])
def test_recipes_reach_the_share_in_the_tokens_they_train(
    cache, data, tokenizer, general, share, method
):
    cfg = _cfg(
        cache,
        f"finetune.replay_share={share}",
        f"finetune.replay_file={general}",
        method=method,
    )
    built = training_set(cfg, data, cache)
    summary = built.stats["replay"]
    if built.examples is not None:  # qa: loss on answers; replay texts are document examples
        replay = [e.document for e in built.examples if e.document is not None]
        counts = _trained(tokenizer, built.examples)
        replayed = sum(c for e, c in zip(built.examples, counts, strict=True) if e.document)
        total = sum(counts)
    else:  # documents: every token of the packed stream is trained
        replay = built.texts[len(built.texts) - summary["texts"] :]
        replayed = sum(map(len, encode_texts(tokenizer, replay)))
        total = sum(map(len, encode_texts(tokenizer, built.texts)))
    assert summary["texts"] == len(replay) > 0
    assert summary["tokens"] == replayed
    assert summary["share"] == pytest.approx(replayed / total, abs=1e-4)
    assert abs(replayed / total - share) <= MIN_PIECE / (total - replayed)
    assert summary["samples"] == [text[:300] for text in replay[:3]]


def test_a_share_of_0_replays_nothing(cache, data, general):
    cfg = _cfg(cache, f"finetune.replay_file={general}")
    built = training_set(cfg, data, cache)
    assert [e for e in built.examples if e.document is not None] == []
    assert built.stats["replay"] == {"texts": 0, "tokens": 0, "share": 0.0, "samples": []}


def test_self_replay_by_share_samples_whole_batches_and_keeps_three_samples(cache, data):
    cfg = _cfg(cache, "finetune.replay_share=0.3", "finetune.replay_source=self")
    built = training_set(cfg, data, cache)
    summary = built.stats["replay"]
    assert summary["source"] == "self" and summary["texts"] >= 3
    assert len(summary["samples"]) == 3 and all(0 < len(s) <= 300 for s in summary["samples"])
    lines = Path(summary["file"]).read_text(encoding="utf-8").splitlines()
    cached = [json.loads(line) for line in lines]
    assert len(cached) % 16 == 0  # whole sampling batches: one cache entry per batch count
    assert abs(summary["share"] - 0.3) < 0.02


def test_the_older_ratio_still_trains_and_reports_its_share(cache, data, general):
    cfg = _cfg(cache, "finetune.replay_ratio=0.5", f"finetune.replay_file={general}")
    built = training_set(cfg, data, cache)
    summary = built.stats["replay"]
    pairs = [e for e in built.examples if e.document is None]
    assert summary["texts"] == round(0.5 * len(pairs)) and summary["replay_ratio"] == 0.5
    # Half a text per answer is most of the loss: what replay_share is there to set.
    assert summary["share"] > 0.8


def test_share_and_ratio_together_are_refused_in_one_line(cache, data, general):
    cfg = _cfg(
        cache,
        "finetune.replay_share=0.1",
        "finetune.replay_ratio=0.5",
        f"finetune.replay_file={general}",
    )
    with pytest.raises(UserError) as info:
        training_set(cfg, data, cache)
    assert info.value.field == "finetune.replay_ratio" and "\n" not in info.value.format()
    with pytest.raises(UserError) as info:
        training_set(_cfg(cache, "finetune.replay_share=0.1"), data, cache)
    assert info.value.field == "finetune.replay_share"  # no file and source=file
    with pytest.raises(UserError) as info:
        training_set(_cfg(cache, "finetune.replay_share=0.1", method="distill"), data, cache)
    assert info.value.field == "finetune.replay_share"


@pytest.mark.parametrize("share", ["1.0", "-0.1", "nan"])
def test_a_share_outside_0_1_stops_the_command(tmp_path, cache_dir, share):
    out_root = tmp_path / "outputs"
    result = run_kfr(
        "method=qa_ft",
        f"finetune.replay_share={share}",
        f"paths.output_root={out_root}",
        cache_dir=cache_dir,
        cwd=tmp_path,
    )
    line = _assert_one_line_exit_2_nothing_written(result, out_root)
    assert line == (
        f"kfr: error: config: field 'finetune.replay_share': must be in [0, 1), got {float(share)}"
    )


def test_identity_reads_the_share_only_when_it_replays():
    base = ["method=qa_ft", "finetune.replay_source=self"]

    def derived(*overrides):
        cfg = compose_config([*base, *overrides])
        return config_hash(cfg), cell_dirname([*base, *overrides], cfg), training_settings(cfg)

    plain, zero, some = (
        derived(),
        derived("finetune.replay_share=0"),
        derived("finetune.replay_share=0.1"),
    )
    assert zero[0] == plain[0] and zero[2] == plain[2]  # the cells and checkpoints of before
    assert "replay_share" not in zero[1]
    assert some[0] != plain[0] and some[2] != plain[2] and "replay_share=0.1" in some[1]

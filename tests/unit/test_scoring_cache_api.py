"""The cached scoring path across transformers' two key/value-cache keywords.

transformers 5.2x decoders take the cache as ``cache=``; 5.17's take ``past_key_values=`` and drop
an unknown keyword into ``**kwargs`` without a word, so passing the wrong one scored every choice
without its context (seen on an H200 image with transformers 5.17). kfr picks the keyword from
the decoder's signature and refuses a cache the decoder left empty.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from kfr.core.schema import PromptStyle
from kfr.evaluation import loglikelihood
from kfr.evaluation.loglikelihood import score_requests
from kfr.evaluation.prompts import build_requests
from tests.unit.test_evaluation_scoring import QUESTIONS


class _OldKeywordDecoder(torch.nn.Module):
    """A decoder with transformers 5.17's signature (``past_key_values``) around the real one."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.installed = loglikelihood._cache_keyword(type(inner))

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=None,
        **kwargs,
    ):
        assert "cache" not in kwargs, "kfr passed cache= to a past_key_values model"
        return self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{self.installed: past_key_values},
        )


class _CacheDroppingDecoder(torch.nn.Module):
    """A decoder that, like 5.17 given ``cache=``, swallows the cache it is handed."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        kwargs.pop("cache", None)
        kwargs.pop("past_key_values", None)
        return self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )


def _scores(tiny_lm, path: str):
    requests = build_requests(QUESTIONS, PromptStyle.cloze, shots=1)
    return score_requests(
        tiny_lm.model,
        tiny_lm.tokenizer,
        requests,
        max_length=tiny_lm.max_length,
        batch_size=3,
        progress=False,
        path=path,
    )[0]


def test_the_keyword_follows_the_decoder_signature(tiny_lm):
    decoder = tiny_lm.model.get_decoder()
    params = inspect.signature(type(decoder).forward).parameters
    expected = "cache" if "cache" in params else "past_key_values"
    assert loglikelihood._cache_keyword(type(decoder)) == expected
    assert loglikelihood._cache_keyword(_OldKeywordDecoder) == "past_key_values"


def test_a_past_key_values_decoder_scores_like_the_packed_path(tiny_lm, monkeypatch):
    packed = _scores(tiny_lm, "packed")
    real = loglikelihood._split_head(tiny_lm.model)
    monkeypatch.setattr(
        loglikelihood, "_split_head", lambda model: (_OldKeywordDecoder(real[0]), real[1])
    )
    cached = _scores(tiny_lm, "cached")
    for row, expected in zip(cached, packed, strict=True):
        assert row == pytest.approx(expected, abs=2e-4)


def test_a_decoder_that_ignores_the_cache_is_refused(tiny_lm, monkeypatch):
    real = loglikelihood._split_head(tiny_lm.model)
    monkeypatch.setattr(
        loglikelihood, "_split_head", lambda model: (_CacheDroppingDecoder(real[0]), real[1])
    )
    with pytest.raises(RuntimeError, match="did not fill the key/value cache"):
        _scores(tiny_lm, "cached")

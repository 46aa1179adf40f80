"""Packed, batched scoring must equal lm-eval's one-forward-per-choice computation."""

from __future__ import annotations

import pytest
import torch

from kfr.core.errors import UserError
from kfr.core.schema import PromptStyle
from kfr.data.schema import Question
from kfr.evaluation.loglikelihood import score_requests, split_tokens
from kfr.evaluation.prompts import ChoiceRequest, build_requests


def reference_loglikelihood(model, tokenizer, context: str, continuation: str, max_length: int):
    """lm-eval's HFLM computation for one (context, continuation) pair, written out plainly."""
    ctx, cont = split_tokens(tokenizer, context, continuation)
    inputs = (ctx + cont)[-(max_length + 1) :][:-1]
    with torch.no_grad():
        logits = model(torch.tensor([inputs])).logits[0].float().log_softmax(-1)
    scored = logits[-len(cont) :]
    return sum(scored[i, token].item() for i, token in enumerate(cont))


QUESTIONS = [
    Question(
        "a",
        "Which river runs through the old town of Brellmoor?",
        ("the Vask", "Ister", "a small unnamed stream near the mill", "none"),
        0,
        "rivers",
    ),
    Question(
        "b",
        "Who founded the Velmont Literary Guild?",
        ("Tivabeth Morvelle", "Oskar", "Ana Lise Marrow-Kent", "nobody at all, it grew"),
        2,
        "people",
    ),
    Question("c", "Year?", ("1901", "1977", "2003", "1850"), 1, "years"),
    Question("d", "Pick one.", ("x", "y"), 1, None),
    Question(
        "e",
        "A much longer question " * 6 + "ending here?",
        ("alpha beta", "gamma", "delta epsilon zeta", "eta"),
        3,
        "long",
    ),
]


@pytest.fixture(scope="module", params=[PromptStyle.cloze, PromptStyle.letter])
def requests_(request):
    return build_requests(QUESTIONS, request.param, shots=1)


@pytest.fixture(params=["packed", "cached"])
def path(request):
    """Both scoring paths: one packed forward, or the context's cache then the choices."""
    return request.param


def test_split_tokens_moves_trailing_space_into_continuation(tiny_lm):
    tok = tiny_lm.tokenizer
    ctx, cont = split_tokens(tok, "Answer: ", "Paris")
    assert ctx == tok("Answer:", add_special_tokens=False)["input_ids"]
    assert ctx + cont == tok("Answer: Paris", add_special_tokens=False)["input_ids"]


def test_packed_scores_equal_per_choice_reference(path, tiny_lm, requests_):
    scores, stats = score_requests(
        tiny_lm.model,
        tiny_lm.tokenizer,
        requests_,
        max_length=tiny_lm.max_length,
        batch_size=3,
        progress=False,
        path=path,
    )
    assert stats.truncated_requests == 0
    for request, row in zip(requests_, scores, strict=True):
        expected = [
            reference_loglikelihood(
                tiny_lm.model, tiny_lm.tokenizer, request.context, c, tiny_lm.max_length
            )
            for c in request.continuations
        ]
        assert row == pytest.approx(expected, abs=2e-4)


def test_batch_size_does_not_change_results(path, tiny_lm, requests_):
    runs = [
        score_requests(
            tiny_lm.model,
            tiny_lm.tokenizer,
            requests_,
            max_length=tiny_lm.max_length,
            batch_size=bs,
            progress=False,
            path=path,
        )[0]
        for bs in (1, 2, 5, 16)
    ]
    argmaxes = [[max(range(len(r)), key=r.__getitem__) for r in run] for run in runs]
    assert all(a == argmaxes[0] for a in argmaxes)
    for run in runs[1:]:
        for row, first in zip(run, runs[0], strict=True):
            assert row == pytest.approx(first, abs=1e-4)


def test_inputs_longer_than_max_length_are_cut_from_the_left_like_lm_eval(path, tiny_lm):
    requests = build_requests(QUESTIONS, PromptStyle.cloze, shots=2)
    max_length = 24  # shorter than every context: every question is truncated
    scores, stats = score_requests(
        tiny_lm.model,
        tiny_lm.tokenizer,
        requests,
        max_length=max_length,
        batch_size=4,
        progress=False,
        path=path,
    )
    assert stats.truncated_requests == len(requests)
    for request, row in zip(requests, scores, strict=True):
        expected = [
            reference_loglikelihood(
                tiny_lm.model, tiny_lm.tokenizer, request.context, c, max_length
            )
            for c in request.continuations
        ]
        assert row == pytest.approx(expected, abs=2e-4)


def test_empty_context_is_scored_after_a_prefix_token(path, tiny_lm):
    tok = tiny_lm.tokenizer
    request = ChoiceRequest("z", "", (" cat", " dog"), (3, 3))
    (row,), _ = score_requests(
        tiny_lm.model, tok, [request], max_length=64, progress=False, path=path
    )
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    cont = tok(" cat", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = tiny_lm.model(torch.tensor([[prefix, *cont[:-1]]])).logits[0].log_softmax(-1)
    expected = sum(logits[i, t].item() for i, t in enumerate(cont))
    assert row[0] == pytest.approx(expected, abs=2e-4)


def test_batch_size_must_be_positive(tiny_lm, requests_):
    with pytest.raises(ValueError, match="batch_size"):
        score_requests(tiny_lm.model, tiny_lm.tokenizer, requests_, max_length=64, batch_size=0)


def test_whitespace_only_context_is_scored_like_an_empty_one(path, tiny_lm):
    tok = tiny_lm.tokenizer
    requests = [
        ChoiceRequest("z", "", (" cat", " dog"), (3, 3)),
        ChoiceRequest("w", "  ", ("cat", "dog"), (3, 3)),
    ]
    (empty, spaces), _ = score_requests(
        tiny_lm.model, tok, requests, max_length=64, progress=False, path=path
    )
    # "  " + "cat" moves both spaces into the continuation: "  cat" vs " cat" differ, but both
    # are scored after the prefix token and must be finite.
    assert all(v < 0 for v in empty + spaces)


@pytest.fixture(scope="module")
def bos_tokenizer(tiny_lm):
    """The same vocabulary with a tokenizer that adds BOS, as Llama-2's and Mistral's do."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm.tokenizer.name_or_path, add_bos_token=True)


def test_bos_adding_tokenizer_keeps_bos_in_the_context_like_lm_eval(bos_tokenizer):
    bos = bos_tokenizer.bos_token_id
    ctx, cont = split_tokens(bos_tokenizer, "Question: Who?\nAnswer:", " Ada")
    assert ctx[0] == bos and ctx.count(bos) == 1
    assert cont == bos_tokenizer(" Ada", add_special_tokens=False)["input_ids"]
    # A context that already starts with the BOS string gets no second BOS (lm-eval's rule).
    ctx2, _ = split_tokens(bos_tokenizer, bos_tokenizer.bos_token + "Question: Who?", " Ada")
    assert ctx2.count(bos) == 1


def test_bos_adding_tokenizer_scores_equal_reference(path, tiny_lm, bos_tokenizer):
    requests = build_requests(QUESTIONS[:3], PromptStyle.cloze)
    scores, _ = score_requests(
        tiny_lm.model,
        bos_tokenizer,
        requests,
        max_length=512,
        batch_size=2,
        progress=False,
        path=path,
    )
    for request, row in zip(requests, scores, strict=True):
        expected = [
            reference_loglikelihood(tiny_lm.model, bos_tokenizer, request.context, c, 512)
            for c in request.continuations
        ]
        assert row == pytest.approx(expected, abs=2e-4)


def test_empty_context_with_continuation_starting_with_prefix_token(tiny_lm, bos_tokenizer):
    bos = bos_tokenizer.bos_token
    requests = [ChoiceRequest("p", "", (bos + " cat", " dog"), (3, 3))]
    (row,), _ = score_requests(
        tiny_lm.model, bos_tokenizer, requests, max_length=64, progress=False
    )
    assert all(v < 0 for v in row)


def test_a_choice_longer_than_the_model_can_read_is_a_user_error(tiny_lm):
    long_choice = " word" * 40
    request = ChoiceRequest("q7", "Question: what?\nAnswer:", (" yes", long_choice), (3, 3))
    with pytest.raises(UserError, match=r"question q7: choice 1 \(\d+ tokens\) alone is longer"):
        score_requests(tiny_lm.model, tiny_lm.tokenizer, [request], max_length=16, progress=False)


@pytest.mark.parametrize(
    "layer_types", [("sliding_attention",) * 2, ("sliding_attention", "full_attention")]
)
def test_sliding_window_layers_score_long_contexts_like_a_plain_forward(path, tiny_lm, layer_types):
    """Gemma 3 (5 of 6 layers windowed) and Mistral (all) limit attention to a window that
    transformers builds into its own mask; kfr's packed 4-D mask must carry it, or contexts
    longer than the window score otherwise than lm-eval's plain forward."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_lm.tokenizer
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
        layer_types=list(layer_types), max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    requests = build_requests(QUESTIONS, PromptStyle.cloze, shots=2)  # contexts >> 8 tokens
    rows, _ = score_requests(
        model, tok, requests, max_length=256, batch_size=3, progress=False, path=path
    )
    for request, row in zip(requests, rows, strict=True):
        assert len(tok(request.context)["input_ids"]) > 3 * config.sliding_window
        expected = [
            reference_loglikelihood(model, tok, request.context, c, 256)
            for c in request.continuations
        ]
        assert row == pytest.approx(expected, abs=1e-4)

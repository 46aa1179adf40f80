"""Answer scoring requests with a causal LM: summed log-probability of each continuation.

Token boundaries follow LM-Evaluation-Harness exactly: trailing spaces of the context move into
the continuation, context+continuation is encoded as a whole, and the continuation's tokens are
what follows the context's own encoding. Inputs longer than ``max_length`` are cut from the left
per choice, as lm-eval does.

Two things make this faster than scoring each (context, choice) pair on its own, without changing
the numbers being computed:
- The choices of one question share their context. They are packed into one sequence,
  ``context + choice_1 + choice_2 + ...``, with position ids restarting after the context for each
  choice and a 4-D attention mask that lets each choice see the context and itself only: the
  context is computed once per question instead of once per choice.
- Only positions that predict a continuation token go through the output head and the
  log-softmax; lm-eval computes the full vocabulary at every position, which dominates its cost
  on long (retrieval-augmented) contexts.
- Long contexts take a second shape of the same idea (``path="auto"`` picks it from
  ``CACHED_PATH_MIN_CONTEXT`` tokens): the contexts run first with plain causal attention and no
  mask, so the attention kernel skips the upper triangle and shares key/value heads without
  copying them, and their keys and values are kept; then all choices of each context run as one
  short sequence against that cache. The packed 4-D mask makes the kernel compute the whole
  square, which on ~1000-token prompts costs more than the second forward.
Batches are sorted longest first, so an out-of-memory error shows up at the first batch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache as _memoize

import torch
from tqdm.auto import tqdm

from kfr.core import faults
from kfr.evaluation.prompts import ChoiceRequest

log = logging.getLogger(__name__)


SCORING_PATHS = ("auto", "packed", "cached")
# Contexts from this many tokens are scored by the cached path. Measured on SmolLM2-135M, 1 CPU
# thread, CPU time per batch of 8 (benchmarks/eval_throughput.py workloads): ~50-token cloze
# prompts 17% slower cached (a second forward's fixed costs), 250 tokens 4-8% faster, 1000
# tokens 16% faster (the packed path's masked attention computes the whole square).
CACHED_PATH_MIN_CONTEXT = 256


@dataclass
class PackedUnit:
    """One packed sequence: a context and the choices that share it."""

    request: int
    context: list[int]
    choices: list[tuple[int, list[int]]]  # (choice index, continuation tokens)

    @property
    def length(self) -> int:
        # The last token of each continuation is never an input: nothing is predicted from it.
        return len(self.context) + sum(len(tokens) - 1 for _, tokens in self.choices)


@dataclass
class ScoringStats:
    truncated_requests: int = 0
    sequences: int = 0
    tokens: int = 0


def _encode(tokenizer, text: str) -> list[int]:
    """lm-eval's ``tok_encode``: the tokenizer's own special tokens (Llama-2 and Mistral add a
    BOS, SmolLM2 adds nothing), unless the text already starts with the prefix token."""
    prefix = tokenizer.decode(_prefix_token(tokenizer))
    if prefix and text.startswith(prefix):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]


def split_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair``: the (context, continuation) tokens of one choice."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    context_tokens = _encode(tokenizer, context)
    return context_tokens, whole[len(context_tokens) :]


def _prefix_token(tokenizer) -> int:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to start an empty context")


def _units_for(
    index: int, request: ChoiceRequest, tokenizer, max_length: int, stats: ScoringStats
) -> list[PackedUnit]:
    if request.context == "":
        # lm-eval scores a continuation with no context after the model's prefix token (or, when
        # the continuation itself starts with that token, after its own first token).
        prefix = _prefix_token(tokenizer)
        pairs = []
        for continuation in request.continuations:
            tokens = tokenizer(continuation, add_special_tokens=False)["input_ids"]
            pairs.append(([prefix], tokens) if tokens[:1] != [prefix] else (tokens[:1], tokens[1:]))
    else:
        pairs = [split_tokens(tokenizer, request.context, c) for c in request.continuations]
        if not pairs[0][0]:  # whitespace-only context: nothing to condition on either
            pairs = [([_prefix_token(tokenizer)], cont) for _, cont in pairs]
    for k, (_, cont) in enumerate(pairs):
        if not cont:
            raise request.error(f"choice {k} encodes to no tokens", "choices")
    fits = all(len(ctx) + len(cont) - 1 <= max_length for ctx, cont in pairs)
    if fits and all(ctx == pairs[0][0] for ctx, _ in pairs):
        # The usual case: every choice has the same context tokens, packed into one unit.
        return [PackedUnit(index, pairs[0][0], [(k, cont) for k, (_, cont) in enumerate(pairs)])]
    # Contexts differ per choice: too long (each choice's input is cut from the left, as lm-eval
    # does) or an empty context whose prefix depends on the choice. One unit per choice.
    stats.truncated_requests += not fits
    units = []
    for k, (ctx, cont) in enumerate(pairs):
        window = (ctx + cont)[-(max_length + 1) :]
        if len(cont) >= len(window):
            raise request.error(
                f"choice {k} ({len(cont)} tokens) alone is longer than the model's max length "
                f"({max_length}); shorten it or raise model.max_length",
                "choices",
            )
        units.append(PackedUnit(index, window[: len(window) - len(cont)], [(k, cont)]))
    return units


def _sliding_window(model) -> tuple[int | None, bool]:
    """(window, whether only some layers use it) of a sliding-window model, else (None, False).

    transformers applies the window by building the mask itself, and takes a 4-D mask as it is:
    the packed mask has to carry the window (Gemma 3: 512 tokens on 5 layers of 6; Mistral-7B:
    4096 on every layer), or long contexts score differently from lm-eval's unmasked forward.
    """
    config = getattr(model.config, "text_config", None) or model.config
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None, False
    layer_types = set(getattr(config, "layer_types", None) or ())
    if layer_types and "sliding_attention" not in layer_types:
        return None, False
    return window, len(layer_types) > 1


def _additive(allowed: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None].to(device)


def _pack(
    units: Sequence[PackedUnit],
    pad_id: int,
    dtype: torch.dtype,
    device: torch.device,
    sliding: tuple[int | None, bool] = (None, False),
):
    """Inputs, positions, additive 4-D mask (per layer type for models that mix full and
    sliding-window attention) and (row, position, token, unit, choice) targets."""
    width = max(unit.length for unit in units)
    batch = len(units)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    # Segment of each position: -1 context, k >= 0 choice k, padding a unique value < -1 so a
    # padding row attends to the context and itself (never an empty row, which would give NaN).
    segments = -2 - torch.arange(width).repeat(batch, 1)
    targets: list[tuple[int, int, int, int, int]] = []
    for row, unit in enumerate(units):
        n_ctx = len(unit.context)
        input_ids[row, :n_ctx] = torch.tensor(unit.context)
        positions[row, :n_ctx] = torch.arange(n_ctx)
        segments[row, :n_ctx] = -1
        offset = n_ctx
        for k, tokens in unit.choices:
            body = tokens[:-1]
            end = offset + len(body)
            input_ids[row, offset:end] = torch.tensor(body, dtype=torch.long)
            positions[row, offset:end] = torch.arange(n_ctx, n_ctx + len(body))
            segments[row, offset:end] = k
            # Token i of the choice is predicted from the context's last position (i == 0) or
            # from the choice's own token i - 1.
            for i, token in enumerate(tokens):
                source = n_ctx - 1 if i == 0 else offset + i - 1
                targets.append((row, source, token, unit.request, k))
            offset = end
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    seg_q = segments[:, :, None]
    seg_k = segments[:, None, :]
    allowed = causal & ((seg_k == -1) | (seg_k == seg_q))
    window, mixed = sliding
    if window is None:
        mask = _additive(allowed, dtype, device)
    else:
        # The window counts positions (a choice continues its context's positions), not columns.
        near = positions[:, :, None] - positions[:, None, :] < window
        windowed = _additive(allowed & near, dtype, device)
        full = _additive(allowed, dtype, device) if mixed else windowed
        mask = {"full_attention": full, "sliding_attention": windowed} if mixed else windowed
    return (input_ids.to(device), positions.to(device), mask, targets)


def _split_head(model):
    """(decoder, output head) when the head can be applied to selected positions only."""
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def _pack_choices(
    units: Sequence[PackedUnit],
    context_width: int,
    pad_id: int,
    dtype: torch.dtype,
    device: torch.device,
    sliding: tuple[int | None, bool] = (None, False),
):
    """The choices of each unit as one sequence that continues its (cached) context.

    Returns inputs, positions and the additive 4-D mask over ``context_width`` cached keys plus
    the choices' own keys, and (row, source, token, unit, choice) targets whose source is the
    context's last position (``from_context``) or a position of the choices' sequence.
    """
    width = max(1, max(sum(len(t) - 1 for _, t in unit.choices) for unit in units))
    batch = len(units)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    segments = -2 - torch.arange(width).repeat(batch, 1)  # padding: a segment of its own
    context_lengths = torch.tensor([len(unit.context) for unit in units])
    targets: list[tuple[int, int, int, int, int, bool]] = []
    for row, unit in enumerate(units):
        n_ctx, offset = len(unit.context), 0
        for k, tokens in unit.choices:
            body = tokens[:-1]
            end = offset + len(body)
            input_ids[row, offset:end] = torch.tensor(body, dtype=torch.long)
            positions[row, offset:end] = torch.arange(n_ctx, n_ctx + len(body))
            segments[row, offset:end] = k
            for i, token in enumerate(tokens):
                if i == 0:
                    targets.append((row, n_ctx - 1, token, unit.request, k, True))
                else:
                    targets.append((row, offset + i - 1, token, unit.request, k, False))
            offset = end
    # A choice token sees its row's real context tokens (never the padding after them) and the
    # tokens of its own choice up to itself.
    sees_context = torch.arange(context_width)[None, None, :] < context_lengths[:, None, None]
    sees_context = sees_context.expand(batch, width, context_width)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    sees_choice = causal & (segments[:, None, :] == segments[:, :, None])
    allowed = torch.cat([sees_context, sees_choice], dim=2)
    window, mixed = sliding
    if window is None:
        mask = _additive(allowed, dtype, device)
    else:
        key_positions = torch.cat([torch.arange(context_width).repeat(batch, 1), positions], 1)
        near = positions[:, :, None] - key_positions[:, None, :] < window
        windowed = _additive(allowed & near, dtype, device)
        full = _additive(allowed, dtype, device) if mixed else windowed
        mask = {"full_attention": full, "sliding_attention": windowed} if mixed else windowed
    return input_ids.to(device), positions.to(device), mask, targets


def _gather_logprobs(head, hidden: torch.Tensor, targets, device) -> torch.Tensor:
    rows = torch.tensor([t[0] for t in targets], device=device)
    sources = torch.tensor([t[1] for t in targets], device=device)
    tokens = torch.tensor([t[2] for t in targets], device=device)
    logits = head(hidden[rows, sources])
    return torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None])[:, 0]


@torch.inference_mode()
def _score_batch_cached(model, split, units, pad_id, dtype, device):
    """Two forward passes: the contexts alone (plain causal attention, no mask: the attention
    kernel skips the upper triangle and shares key/value heads without copies), keeping their
    keys and values; then every unit's choices against that cache with a small 4-D mask."""
    from transformers import DynamicCache

    decoder, head = split
    context_width = max(len(unit.context) for unit in units)
    context_ids = torch.full((len(units), context_width), pad_id, dtype=torch.long)
    for row, unit in enumerate(units):  # right padding: causal rows never see it
        context_ids[row, : len(unit.context)] = torch.tensor(unit.context)
    needs_choices = any(len(tokens) > 1 for unit in units for _, tokens in unit.choices)
    # A cache without the config keeps every layer's keys whole (a config would give
    # sliding-window layers a cache that drops old keys); the second mask carries the window.
    cache = DynamicCache() if needs_choices else None
    cache_kw = {_cache_keyword(type(decoder)): cache} if needs_choices else {}
    context_hidden = decoder(
        input_ids=context_ids.to(device), use_cache=needs_choices, **cache_kw
    ).last_hidden_state
    if cache is not None and cache.get_seq_length() != context_width:
        # A model that drops an unknown keyword into **kwargs would score the choices without
        # their context: wrong numbers, no error. Never let that pass silently.
        raise RuntimeError(
            f"{type(decoder).__name__} did not fill the key/value cache passed as "
            f"{next(iter(cache_kw))}= (holds {cache.get_seq_length()} of {context_width} "
            "tokens): this transformers version's cache API is not supported by kfr"
        )
    input_ids, positions, mask, targets = _pack_choices(
        units, context_width, pad_id, dtype, device, _sliding_window(model)
    )
    from_context = [t for t in targets if t[5]]
    from_choices = [t for t in targets if not t[5]]
    logprobs = {}
    for t, lp in zip(
        from_context,
        _gather_logprobs(head, context_hidden, from_context, device).tolist(),
        strict=True,
    ):
        logprobs[id(t)] = lp
    if from_choices:
        choice_hidden = decoder(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **cache_kw,
        ).last_hidden_state
        for t, lp in zip(
            from_choices,
            _gather_logprobs(head, choice_hidden, from_choices, device).tolist(),
            strict=True,
        ):
            logprobs[id(t)] = lp
    return [(t[3], t[4], logprobs[id(t)]) for t in targets]


@_memoize
def _cache_keyword(decoder_type: type) -> str:
    """The keyword a decoder's forward takes its key/value cache by: ``cache`` from transformers
    5.2x on, ``past_key_values`` before (5.17's models silently ignore ``cache=``)."""
    params = inspect.signature(decoder_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _use_cache(path: str, split, units: Sequence[PackedUnit]) -> bool:
    if split is None or path == "packed":
        return False
    return path == "cached" or max(len(u.context) for u in units) >= CACHED_PATH_MIN_CONTEXT


@torch.inference_mode()
def _score_batch(
    model, split, units, pad_id, dtype, device, path: str = "auto"
) -> list[tuple[int, int, float]]:
    if _use_cache(path, split, units):
        return _score_batch_cached(model, split, units, pad_id, dtype, device)
    sliding = _sliding_window(model)
    input_ids, positions, mask, targets = _pack(units, pad_id, dtype, device, sliding)
    rows = torch.tensor([t[0] for t in targets], device=device)
    sources = torch.tensor([t[1] for t in targets], device=device)
    tokens = torch.tensor([t[2] for t in targets], device=device)
    if split is not None:
        decoder, head = split
        hidden = decoder(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        logits = head(hidden[rows, sources])
    else:
        logits = model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).logits[rows, sources]
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None])[:, 0]
    return [(t[3], t[4], lp) for t, lp in zip(targets, logprobs.tolist(), strict=True)]


def plan_units(
    requests: Sequence[ChoiceRequest], tokenizer, max_length: int
) -> tuple[list[PackedUnit], ScoringStats]:
    """The packed sequences that score ``requests``, longest first (ties in request order, so
    the order is deterministic); what the benchmarks count necessary FLOPs from."""
    stats = ScoringStats()
    units = [
        u for i, r in enumerate(requests) for u in _units_for(i, r, tokenizer, max_length, stats)
    ]
    units.sort(key=lambda unit: (-unit.length, unit.request))
    return units, stats


def score_requests(
    model,
    tokenizer,
    requests: Sequence[ChoiceRequest],
    *,
    max_length: int,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
    path: str = "auto",
) -> tuple[list[list[float]], ScoringStats]:
    """Summed log-probability of every continuation of every request, in request order.

    ``path``: ``packed`` (one forward per batch, context and choices in one sequence),
    ``cached`` (context first, then the choices against its cache) or ``auto`` (cached for
    batches whose contexts reach ``CACHED_PATH_MIN_CONTEXT`` tokens). The scores agree to float
    rounding; the choice is only speed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if path not in SCORING_PATHS:
        raise ValueError(f"path must be one of {SCORING_PATHS}, got {path!r}")
    units, stats = plan_units(requests, tokenizer, max_length)
    scores = [[0.0] * len(r.continuations) for r in requests]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:  # quantized weights: masks in the compute dtype
        dtype = torch.float32
    split = _split_head(model)
    device = torch.device(device)
    batches = [units[i : i + batch_size] for i in range(0, len(units), batch_size)]
    for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
        faults.point("score.batch")
        for request, choice, logprob in _score_batch(
            model, split, batch, pad_id, dtype, device, path
        ):
            scores[request][choice] += logprob
        stats.sequences += len(batch)
        stats.tokens += sum(unit.length for unit in batch)
    if stats.truncated_requests:
        log.warning(
            "%d questions were longer than max_length=%d and cut from the left",
            stats.truncated_requests,
            max_length,
        )
    return scores, stats

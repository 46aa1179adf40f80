"""Paraphrase augmentation: the texts fine-tuning trains on, and where their paraphrases come from.

``augment.paraphrases=N`` adds up to N paraphrases of every document (0: documents only, the
paper's FT-reg). Sources (``augment.source``):

- ``template``: the novel_facts generator's paraphrases (``paraphrases.jsonl`` beside its
  knowledge base): other sentence templates, shuffled fact order;
- ``llm``: an instruction-tuned model (``augment.generator``) with the paper's instruction, JSON
  answers validated and retried (:mod:`kfr.generation`), cached per settings under
  ``<cache>/paraphrases/`` in the paraphrase JSONL format;
- ``file``: the user's paraphrase JSONL; every id must name a knowledge-base document;
- ``entigraph``: N entity-graph texts per document instead (:mod:`kfr.finetune.entigraph`).

A document with fewer than N usable paraphrases trains on what it has; the shortfall is counted
in results (``finetune.paraphrases``) rather than hidden. ``augment.tokens`` caps the augmented
texts (never the documents) at that many tokens of the model being trained
(:func:`within_token_budget`), so augmentations compare at equal training tokens. Replay texts
(:mod:`kfr.finetune.replay`) come last.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import AugmentConfig, GeneratorConfig, KfrConfig, ParaphraseSource
from kfr.core.storage import atomic_write_json, build_directory_once
from kfr.data.loading import EvalData
from kfr.data.readers import read_paraphrases, write_paraphrases_jsonl
from kfr.data.schema import Document
from kfr.finetune.entigraph import has_fact_meta, llm_entigraph, template_entigraph
from kfr.finetune.keys import content_digest, model_identity
from kfr.finetune.replay import OwnTexts, with_replay
from kfr.generation import SamplingSettings, TextGenerator, TransformersGenerator, generate_json

log = logging.getLogger(__name__)

# The paper's instruction to GPT-4, for any instruction-tuned model. Bump PROMPT_VERSION when
# the wording changes: cached paraphrases are keyed on it.
PROMPT_VERSION = 2
PARAPHRASE_INSTRUCTION = (
    "Paraphrase the text below. Give {n} different versions. Keep the same meaning and do not "
    "change any fact (names, places, years, numbers); change the wording. Keep each version "
    "about as long as the original. Make the versions as different from each other as possible."
    ' Return a JSON object with one key, "paraphrases", holding a list of the {n} versions.'
    "\n\nText:\n{text}"
)
# The answer is started for the model: small instruction-tuned models then write the JSON.
ANSWER_PREFILL = '{"paraphrases": ["'
# A paraphrase far shorter or longer than its document has dropped facts or invented some.
_LENGTH_RATIO = (0.5, 2.0)
LLM_FILE = "paraphrases.jsonl"
LLM_STATS = "stats.json"


# Tokens of each text, as the model being trained counts them.
TokenCounter = Callable[[list[str]], list[int]]


@dataclass
class TrainingTexts:
    # Every document, then the paraphrases (or entity-graph texts) document by document, then
    # the replay texts.
    texts: list[str]
    stats: dict[str, Any]  # the paraphrase, token and replay counts results report


def paraphrase_prompt(text: str, n: int) -> str:
    # No example list in the prompt: small models copy placeholders instead of writing.
    return PARAPHRASE_INSTRUCTION.format(n=n, text=text)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def paraphrase_parser(original: str, n: int) -> Callable[[Any], list[str]]:
    """Validates one JSON answer: up to ``n`` usable paraphrases of ``original``.

    Raises ValueError when the answer holds none (not a list, copies, far too short or long).
    """
    low, high = _LENGTH_RATIO

    def parse(value: Any) -> list[str]:
        items = value.get("paraphrases") if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise ValueError('expected {"paraphrases": [...]}')
        usable = []
        for item in items:
            if not isinstance(item, str):
                continue
            text = _normalise(item)
            if text and text != _normalise(original) and low <= len(text) / len(original) <= high:
                usable.append(text)
        if not usable:
            raise ValueError("no usable paraphrase in the answer")
        return usable[:n]

    return parse


def generate_paraphrases(
    generator: TextGenerator,
    documents: Sequence[Document],
    n: int,
    *,
    per_request: int,
    retries: int,
    seed: int,
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Up to ``n`` distinct paraphrases per document; prompts whose answers fail are retried."""
    per_request = max(1, min(per_request, n))
    # Several prompts per document when one answer holds fewer than n versions; sampling makes
    # identical prompts answer differently.
    owners = [d for d in documents for _ in range(math.ceil(n / per_request))]
    parsers = [paraphrase_parser(d.text, per_request) for d in owners]
    results, stats = generate_json(
        generator,
        [paraphrase_prompt(d.text, per_request) for d in owners],
        lambda index, value: parsers[index](value),
        retries=retries,
        seed=seed,
        prefill=ANSWER_PREFILL,
    )
    paraphrases: dict[str, list[str]] = {d.id: [] for d in documents}
    for document, found in zip(owners, results, strict=True):
        kept = paraphrases[document.id]
        for text in found or []:
            if text not in kept and len(kept) < n:
                kept.append(text)
    return paraphrases, stats.to_json()


# --------------------------------------------------------------------------- sources


def _template_paraphrases(data: EvalData, n: int) -> tuple[dict[str, list[str]], dict]:
    if data.data_dir is None or not (data.data_dir / "paraphrases.jsonl").is_file():
        raise UserError(
            "template paraphrases come with the generated novel_facts data set; for your own "
            "knowledge base use augment=llm or augment=file",
            field="augment.source",
        )
    path = data.data_dir / "paraphrases.jsonl"
    found = read_paraphrases(path)
    available = min((len(found.get(d.id, [])) for d in data.documents), default=0)
    if available < n:
        raise UserError(
            f"{n} paraphrases per document asked for, the data set has {available}: raise "
            f"data.novel_facts.n_paraphrases to at least {n}",
            field="augment.paraphrases",
        )
    return found, {"file": str(path)}


def _unknown_id_line(path: Path, unknown: str) -> int | None:
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        try:
            if json.loads(line).get("id") == unknown:
                return number
        except (ValueError, AttributeError):
            continue
    return None


def _file_paraphrases(path_spec: str | None, documents: Sequence[Document]) -> tuple[dict, dict]:
    if not path_spec:
        raise UserError("augment.source=file needs augment.file=PATH", field="augment.file")
    path = Path(path_spec).expanduser()
    found = read_paraphrases(path)
    known = {d.id for d in documents}
    for id_ in found:
        if id_ not in known:
            raise UserError(
                f"names unknown document '{id_}' (not in the knowledge base)",
                path=path,
                line=_unknown_id_line(path, id_),
                field="id",
            )
    return found, {"file": str(path)}


def _generator_settings(gen: GeneratorConfig) -> SamplingSettings:
    return SamplingSettings.from_config(gen, "augment.generator")


def llm_paraphrases(
    augment: AugmentConfig,
    documents: Sequence[Document],
    seed: int,
    cache_dir: str | Path,
    *,
    generator: TextGenerator | None = None,
) -> tuple[dict[str, list[str]], dict]:
    """Generated paraphrases, from the cache when these settings already made them."""
    gen, n = augment.generator, augment.paraphrases
    if gen.per_request < 1 or gen.retries < 0 or gen.batch_size < 1:
        raise UserError(
            "per_request and batch_size must be >= 1, retries >= 0", field="augment.generator"
        )
    key = content_digest(
        {
            "model": model_identity(gen.model, keep_dtype=True),
            "sampling": _generator_settings(gen).to_json(),
            "per_request": gen.per_request,
            "retries": gen.retries,
            "n": n,
            "seed": seed,
            "prompt": [PROMPT_VERSION, ANSWER_PREFILL],
            "documents": [[d.id, d.text] for d in documents],
        }
    )
    target = Path(cache_dir) / "paraphrases" / f"{gen.model.name}-{n}p-{key}"

    def build(out_dir: Path) -> None:
        writer = generator or TransformersGenerator.from_config(
            gen.model, cache_dir, _generator_settings(gen)
        )
        log.info(
            "Generating %d paraphrases of %d documents with %s", n, len(documents), writer.name
        )
        found, stats = generate_paraphrases(
            writer, documents, n, per_request=gen.per_request, retries=gen.retries, seed=seed
        )
        write_paraphrases_jsonl(out_dir / LLM_FILE, found)
        atomic_write_json(out_dir / LLM_STATS, stats)

    build_directory_once(target, build)
    found = read_paraphrases(target / LLM_FILE)
    stats = json.loads((target / LLM_STATS).read_text(encoding="utf-8"))
    return found, {"cache": str(target), "generation": stats}


def _entigraph_texts(
    cfg: KfrConfig,
    documents: Sequence[Document],
    cache_dir: str | Path,
    generator: TextGenerator | None,
) -> tuple[dict[str, list[str]], dict]:
    augment = cfg.augment
    if has_fact_meta(documents):
        found = template_entigraph(documents, augment.paraphrases, cfg.seed)
        return found, {"writer": "template"}
    settings = _generator_settings(augment.generator)
    return llm_entigraph(
        augment, documents, cfg.seed, cache_dir, settings=settings, generator=generator
    )


def within_token_budget(
    per_document: Sequence[Sequence[str]], budget: int | None, count_tokens: TokenCounter
) -> tuple[list[list[str]], int]:
    """The texts kept under ``budget`` tokens, per document, and the tokens they hold.

    Whole texts are taken round-robin over the documents (every document's first, then every
    document's second, ...) until the next one would pass the budget; each document keeps a
    prefix of its list, in its order. ``budget=None`` keeps everything (and only counts).
    """
    order = [
        (d, i)
        for i in range(max((len(texts) for texts in per_document), default=0))
        for d, texts in enumerate(per_document)
        if i < len(texts)
    ]
    counts = count_tokens([per_document[d][i] for d, i in order])
    if len(counts) != len(order):
        raise ValueError(f"count_tokens gave {len(counts)} counts for {len(order)} texts")
    kept = [0] * len(per_document)
    used = 0
    for (d, _), tokens in zip(order, counts, strict=True):
        if budget is not None and used + tokens > budget:
            break
        used += tokens
        kept[d] += 1
    return [list(texts[:k]) for texts, k in zip(per_document, kept, strict=True)], used


# --------------------------------------------------------------------------- entry point


def _augmented_texts(
    cfg: KfrConfig,
    data: EvalData,
    cache_dir: str | Path,
    generator: TextGenerator | None,
    count_tokens: TokenCounter | None,
) -> tuple[list[str], dict[str, Any]]:
    """Up to augment.paraphrases texts per document from the source, within augment.tokens."""
    augment, documents = cfg.augment, data.documents or []
    n, budget = augment.paraphrases, augment.tokens
    if budget is not None:
        if budget < 1:
            raise UserError(
                f"must be >= 1 (or null: no budget), got {budget}", field="augment.tokens"
            )
        if count_tokens is None:
            raise ValueError("augment.tokens is set: training_texts needs count_tokens")
    source = ParaphraseSource(augment.source)
    if source == ParaphraseSource.template:
        found, extra = _template_paraphrases(data, n)
    elif source == ParaphraseSource.file:
        found, extra = _file_paraphrases(augment.file, documents)
    elif source == ParaphraseSource.entigraph:
        found, extra = _entigraph_texts(cfg, documents, cache_dir, generator)
    else:
        found, extra = llm_paraphrases(augment, documents, cfg.seed, cache_dir, generator=generator)
    chosen = [found.get(document.id, [])[:n] for document in documents]
    short = sum(len(texts) < n for texts in chosen)
    if short:
        log.warning("%d of %d documents have fewer than %d paraphrases", short, len(documents), n)
    stats: dict[str, Any] = {"source": source.value}
    if count_tokens is not None:
        available = sum(len(texts) for texts in chosen)
        chosen, stats["augment_tokens"] = within_token_budget(chosen, budget, count_tokens)
        kept = sum(len(texts) for texts in chosen)
        stats.update(augment_token_budget=budget, augment_texts_over_budget=available - kept)
        if available > kept:
            log.info("augment.tokens=%d keeps %d of %d augmented texts", budget, kept, available)
    texts = [text for texts in chosen for text in texts]
    stats.update(total=len(texts), documents_short=short, **extra)
    return texts, stats


def training_texts(
    cfg: KfrConfig,
    data: EvalData,
    cache_dir: str | Path,
    *,
    generator: TextGenerator | None = None,
    count_tokens: TokenCounter | None = None,
    own: OwnTexts | None = None,
) -> TrainingTexts:
    """The documents, then up to augment.paraphrases paraphrases of each, then replay texts
    (``own``: the base model's sampler, for ``finetune.replay_source=self``).

    ``count_tokens(texts)`` gives each text's token count with the tokenizer of the model being
    trained; needed when ``augment.tokens`` is set (else ValueError), and when given the
    augmented texts' tokens are reported (``augment_tokens``) with or without a budget.
    """
    documents = data.documents or []
    if not documents:
        raise UserError(
            "fine-tuning needs a knowledge base: set data.knowledge=PATH", field="data.knowledge"
        )
    n = cfg.augment.paraphrases
    if n < 0:
        raise UserError(f"must be >= 0, got {n}", field="augment.paraphrases")
    texts = [d.text for d in documents]
    stats: dict[str, Any] = {"requested_per_document": n, "documents": len(documents), "total": 0}
    if n > 0:
        augmented, info = _augmented_texts(cfg, data, cache_dir, generator, count_tokens)
        texts += augmented
        stats.update(info)
    texts, replay = with_replay(cfg.finetune, texts, cfg.seed, own=own)
    stats.update(replay)
    return TrainingTexts(texts, stats)

"""Paraphrase augmentation: the texts fine-tuning trains on, and where their paraphrases come from.

``augment.paraphrases=N`` adds up to N paraphrases of every document (0: documents only, the
paper's FT-reg). Sources (``augment.source``):

- ``template``: the novel_facts generator's paraphrases (``paraphrases.jsonl`` beside its
  knowledge base): other sentence templates, shuffled fact order;
- ``llm``: an instruction-tuned model (``augment.generator``) with the paper's instruction, JSON
  answers validated and retried (:mod:`kfr.generation`), cached per settings under
  ``<cache>/paraphrases/`` in the paraphrase JSONL format;
- ``file``: the user's paraphrase JSONL; every id must name a knowledge-base document.

A document with fewer than N usable paraphrases trains on what it has; the shortfall is counted
in results (``finetune.paraphrases``) rather than hidden.
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
from kfr.finetune.keys import content_digest, model_identity
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


@dataclass
class TrainingTexts:
    texts: list[str]  # every document, then the paraphrases, document by document
    stats: dict[str, Any]  # the paraphrase counts results report


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
    settings = SamplingSettings(
        max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        batch_size=gen.batch_size,
    )
    return settings.checked(lambda attr: f"augment.generator.{attr}")


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


# --------------------------------------------------------------------------- entry point


def training_texts(
    cfg: KfrConfig,
    data: EvalData,
    cache_dir: str | Path,
    *,
    generator: TextGenerator | None = None,
) -> TrainingTexts:
    """The documents, then up to augment.paraphrases paraphrases of each."""
    documents = data.documents or []
    if not documents:
        raise UserError(
            "fine-tuning needs a knowledge base: set data.knowledge=PATH", field="data.knowledge"
        )
    augment = cfg.augment
    n = augment.paraphrases
    if n < 0:
        raise UserError(f"must be >= 0, got {n}", field="augment.paraphrases")
    texts = [d.text for d in documents]
    stats: dict[str, Any] = {"requested_per_document": n, "documents": len(documents), "total": 0}
    if n == 0:
        return TrainingTexts(texts, stats)
    source = ParaphraseSource(augment.source)
    if source == ParaphraseSource.template:
        found, extra = _template_paraphrases(data, n)
    elif source == ParaphraseSource.file:
        found, extra = _file_paraphrases(augment.file, documents)
    else:
        found, extra = llm_paraphrases(augment, documents, cfg.seed, cache_dir, generator=generator)
    short = 0
    for document in documents:
        chosen = found.get(document.id, [])[:n]
        short += len(chosen) < n
        texts += chosen
    stats.update(source=source.value, total=len(texts) - len(documents), documents_short=short)
    stats.update(extra)
    if short:
        log.warning("%d of %d documents have fewer than %d paraphrases", short, len(documents), n)
    return TrainingTexts(texts, stats)

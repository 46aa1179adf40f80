"""The leakage filter: drop the questions a base model answers correctly without any context.

They test what the model knew, not what was injected. At chance level a model still answers 1/L
of them correctly by luck, so this also drops that share of good questions.
"""

from __future__ import annotations

import time
from pathlib import Path

from kfr.builders.questions.pipeline import GenerationResult
from kfr.core.schema import PromptStyle
from kfr.evaluation.metrics import predict
from kfr.evaluation.prompts import build_requests
from kfr.generation.backends import model_config_by_name
from kfr.models import load_model

DEFAULT_LEAKAGE_MODEL = "smollm2_135m"


def leakage_model(generator, name: str | None, cache_dir: str | Path):
    """The model that judges leakage: kfr model config ``name`` if given, else the generator's
    own model when it is a local one, else :data:`DEFAULT_LEAKAGE_MODEL`."""
    lm = getattr(generator, "lm", None)
    if name or lm is None:
        lm = load_model(model_config_by_name(name or DEFAULT_LEAKAGE_MODEL), cache_dir)
    return lm


def drop_known_without_context(
    result: GenerationResult, lm, *, batch_size: int = 8
) -> GenerationResult:
    """Drop the questions ``lm`` answers correctly with no context (cloze, 0-shot, ``acc``)."""
    if not result.questions:
        return result
    t0 = time.perf_counter()
    requests = build_requests(result.questions, PromptStyle.cloze)
    scores, _ = lm.loglikelihood(requests, batch_size=batch_size, progress=False)
    predictions = predict(result.questions, scores, [r.choice_lengths for r in requests])
    kept = [p.question for p in predictions if not p.correct]
    known = [p for p in predictions if p.correct]
    result.counts["rejected"]["known_without_context"] = len(known)
    result.counts["questions"] = len(kept)
    result.counts["chunks_with_questions"] = len({q.source_ids[0] for q in kept if q.source_ids})
    result.counts["leakage_filter"] = {"model": lm.name, "scored": len(predictions)}
    for p in known:
        result.rejects.append(
            {"chunk_id": (p.question.source_ids or ("",))[0], "reason": "known_without_context",
             "raw": p.question.to_json()}
        )  # fmt: skip
    result.questions = kept
    result.timings["leakage_filter_s"] = round(time.perf_counter() - t0, 2)
    return result


__all__ = ["DEFAULT_LEAKAGE_MODEL", "drop_known_without_context", "leakage_model"]

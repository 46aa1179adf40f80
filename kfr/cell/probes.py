"""Probe families: questions in forms the training data never uses, scored after the direct ones.

A cell scores every family ``eval.probes`` selects (null: every family the data offers, e.g.
reversal, two_hop and comparison for the generated novel-facts set) exactly as it scores its direct
questions: the same prompt style, the same retriever (each family's own questions are the
queries), the same fitting of passages into the model's context, the same bootstrap. What a family
yields: ``metrics["probes"][family]`` (acc, acc_norm, their intervals, n, chance, and recall for
methods that retrieve) and one predictions.jsonl record per question carrying ``"family"``.

Few-shot examples (``eval.shots > 0``) come from the direct questions' pool (``data.fewshot``, else
the direct questions), never from the family itself: examples in the probe's own form would teach
that form in the prompt, and the probe asks whether the injected knowledge answers a form it was
never shown. Examples about a document the probe needs (sharing a ``source_ids`` entry) are left
out, so no example states the fact a probe asks for; the first ``shots`` of what remains are used
(the same rule as a separate few-shot pool).
SliCK categories and the control set (forgetting) concern the direct questions only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import KfrConfig
from kfr.data.loading import EvalData
from kfr.data.probes import PROBE_FAMILIES
from kfr.data.schema import Question
from kfr.evaluation.context import fit_passages
from kfr.evaluation.metrics import predict, summarize
from kfr.evaluation.prompts import ChoiceRequest, build_requests
from kfr.retrieval.encoders import load_encoder
from kfr.retrieval.retrieve import retrieve_passages

log = logging.getLogger(__name__)

_FIELD = "eval.probes"
# What metrics["probes"][family] keeps of kfr.evaluation.metrics.summarize.
_KEPT = ("n", "acc", "acc_ci95", "acc_norm", "acc_norm_ci95", "chance")


def check_probe_names(probes: Sequence[str] | None) -> None:
    """Unknown family names are known from the config alone: stopped before any data is read."""
    for name in probes or ():
        if name not in PROBE_FAMILIES:
            raise UserError(
                f"unknown probe family '{name}': one of {', '.join(PROBE_FAMILIES)} "
                "(null = every family the data offers, [] = none)",
                field=_FIELD,
            )


def offered(data: EvalData) -> dict[str, list[Question]]:
    """The families the loaded data offers (none for data without probe files)."""
    return data.probes


def selected_families(cfg: KfrConfig, data: EvalData) -> list[str]:
    """The families this cell scores; a family asked for that the data cannot produce is an
    error (a user knowledge base has none; two_hop needs relations between people)."""
    available = offered(data)
    if cfg.eval.probes is None:
        return [f for f in PROBE_FAMILIES if f in available] + sorted(
            set(available) - set(PROBE_FAMILIES)
        )
    check_probe_names(cfg.eval.probes)
    for name in cfg.eval.probes:
        if name not in available:
            has = ", ".join(available) if available else "no probe families"
            raise UserError(
                f"probe family '{name}' asked for, but {data.questions_source} offers {has} "
                "(probes come with the generated novel-facts set, data.novel_facts.version>=2); "
                "set eval.probes=[] or leave it null",
                field=_FIELD,
            )
    return list(dict.fromkeys(cfg.eval.probes))


def _example_pool(data: EvalData) -> list[Question]:
    return list(data.fewshot_pool if data.fewshot_pool is not None else data.questions)


def _pool_for(question: Question, pool: Sequence[Question]) -> list[Question]:
    needed = set(question.source_ids or ())
    return [q for q in pool if not needed.intersection(q.source_ids or ())]


def check_probe_fewshot(cfg: KfrConfig, data: EvalData, families: Sequence[str]) -> None:
    """Every probe question must get ``eval.shots`` examples from the direct pool once the
    examples about its own documents are left out."""
    if cfg.eval.shots <= 0:
        return
    pool = _example_pool(data)
    for family in families:
        for question in offered(data)[family]:
            usable = len(_pool_for(question, pool))
            if usable < cfg.eval.shots:
                raise UserError(
                    f"{cfg.eval.shots} few-shot examples asked for, but probe question "
                    f"{question.id} ({family}) has only {usable} direct questions not about its "
                    "own documents to draw them from",
                    field="eval.shots",
                )


@dataclass
class ProbeScores:
    """What the families add to a cell's results."""

    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics["probes"]
    records: list[dict[str, Any]] = field(default_factory=list)  # predictions.jsonl lines
    scoring: dict[str, dict[str, Any]] = field(default_factory=dict)  # per family: truncation
    context: dict[str, dict[str, int]] = field(default_factory=dict)  # dropped passages


def _builder(cfg: KfrConfig, questions: Sequence[Question], pool: Sequence[Question] | None):
    """``build(passages=...)`` for a family's questions (what fit_passages calls)."""

    def build(passages=None) -> list[ChoiceRequest]:
        if pool is None:
            return build_requests(
                questions, cfg.eval.style, description=cfg.eval.description, passages=passages
            )
        return [
            build_requests(
                [q],
                cfg.eval.style,
                shots=cfg.eval.shots,
                fewshot_pool=_pool_for(q, pool),
                description=cfg.eval.description,
                passages=passages,
            )[0]
            for q in questions
        ]

    return build


def score_probes(
    cfg: KfrConfig, data: EvalData, families: Sequence[str], lm, cache_dir: Path
) -> ProbeScores:
    """Score each family with ``lm`` (retrieving for its questions when the method retrieves)."""
    out = ProbeScores()
    if not families:
        return out
    pool = _example_pool(data) if cfg.eval.shots > 0 else None
    encoder = None
    if cfg.method.retrieve and cfg.retriever.k > 0:
        encoder = load_encoder(cfg.retriever)  # once for every family
    for family in families:
        started = time.perf_counter()
        questions = offered(data)[family]
        build = _builder(cfg, questions, pool)
        retrieval, used = None, {}
        if cfg.method.retrieve:
            retrieval = retrieve_passages(
                cfg.retriever, questions, data.documents, cache_dir, encoder=encoder, progress=False
            )
            fitted = fit_passages(build, retrieval.passages, lm.tokenizer, lm.max_length)
            requests, used = fitted.requests, fitted.used
            out.context[family] = dict(fitted.stats)
        else:
            requests = build()
        log.info("probe family %s: %d questions", family, len(questions))
        loglikelihoods, stats = lm.loglikelihood(
            requests, batch_size=cfg.eval.batch_size, progress=cfg.eval.progress
        )
        predictions = predict(questions, loglikelihoods, [r.choice_lengths for r in requests])
        summary = summarize(
            predictions, samples=cfg.eval.bootstrap_samples, seed=cfg.eval.bootstrap_seed
        )
        metrics = {key: summary[key] for key in _KEPT}
        if retrieval is not None:
            metrics.update(retrieval.recall(questions))
        out.metrics[family] = metrics
        out.scoring[family] = {
            "truncated_questions": stats.truncated_requests,
            "tokens": stats.tokens,
            "score_s": round(time.perf_counter() - started, 3),
        }
        for p in predictions:
            record = p.to_json() | {"family": family}
            if retrieval is not None:
                record |= retrieval.record(p.question.id, used.get(p.question.id))
            out.records.append(record)
    return out

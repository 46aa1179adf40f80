"""Probe families: questions in forms the training data never uses, scored after the direct ones.

A cell scores every family ``eval.probes`` selects (null: every family the data offers, e.g. the
six of the generated novel-facts set's version 3) exactly as it scores its direct questions: the
same prompt style, the same retriever (each family's own questions are the queries) or oracle
context (``eval.oracle``), the same fitting of passages into the model's context, the same
bootstrap. What a family yields: ``metrics["probes"][family]`` (acc, acc_norm, acc_pmi
(:mod:`kfr.evaluation.calibration`), their intervals, n, chance, recall for methods that
retrieve, and the family's diagnostics, :mod:`kfr.cell.probe_diagnostics`) and one
predictions.jsonl record per question carrying ``"family"``.

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

import numpy as np

from kfr.cell.probe_diagnostics import (
    compositionality_gap,
    family_diagnostics,
    summarize_diagnostics,
)
from kfr.core.errors import UserError
from kfr.core.schema import KfrConfig, PromptStyle
from kfr.data.loading import EvalData
from kfr.data.probes import FAMILIES_BY_VERSION, PROBE_FAMILIES
from kfr.data.schema import Document, Question
from kfr.evaluation.calibration import pmi_predictions, score_prior
from kfr.evaluation.context import fit_passages
from kfr.evaluation.metrics import Prediction, bootstrap_interval, predict, summarize
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


def check_probe_settings(cfg: KfrConfig) -> None:
    """What the config alone shows cannot work, before any data is read: an unknown family, a
    family the generated set's version does not write (version 2 has no mentor questions), an
    oracle context for a method that retrieves."""
    check_probe_names(cfg.eval.probes)
    facts = cfg.data.novel_facts
    if facts is not None and not cfg.data.questions:
        writes = FAMILIES_BY_VERSION.get(facts.version, ())
        for name in cfg.eval.probes or ():
            if name not in writes:
                raise UserError(
                    f"probe family '{name}' is not written by data.novel_facts.version="
                    f"{facts.version} (it writes: {', '.join(writes) or 'none'}); version 3 "
                    f"writes {', '.join(FAMILIES_BY_VERSION[3])}",
                    field=_FIELD,
                )
    if cfg.eval.oracle and cfg.method.retrieve:
        raise UserError(
            f"method {cfg.method.name} retrieves its passages; the oracle context replaces "
            "retrieval: use it with a method that does not retrieve (e.g. method=base)",
            field="eval.oracle",
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
    """What the families add to a cell's results (:func:`finish_probes` fills ``metrics`` and
    ``records`` once the direct questions are scored too)."""

    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics["probes"]
    records: list[dict[str, Any]] = field(default_factory=list)  # predictions.jsonl lines
    scoring: dict[str, dict[str, Any]] = field(default_factory=dict)  # per family: truncation
    context: dict[str, dict[str, int]] = field(default_factory=dict)  # dropped passages
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)
    pmi: dict[str, list[int]] = field(default_factory=dict)  # PMI predictions (cloze prompts)
    diagnostics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extra: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # per question id


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


def oracle_passages(
    questions: Sequence[Question], documents: Sequence[Document] | None, source: str
) -> dict[str, list[str]]:
    """``eval.oracle``: each question's source documents, in the order its source_ids name
    them; a question without them is an error naming it."""
    by_id = {d.id: d for d in documents or ()}
    passages = {}
    for question in questions:
        if not question.source_ids or any(i not in by_id for i in question.source_ids):
            raise UserError(
                f"question {question.id} of {source} names no knowledge-base document it is "
                "about (source_ids): the oracle context needs them; set eval.oracle=false",
                field="eval.oracle",
            )
        passages[question.id] = [by_id[i].text for i in question.source_ids]
    return passages


def score_probes(
    cfg: KfrConfig,
    data: EvalData,
    families: Sequence[str],
    lm,
    cache_dir: Path,
    *,
    trained: Sequence[str] | None = None,
) -> ProbeScores:
    """Score each family with ``lm`` (retrieving for its questions when the method retrieves,
    the source documents with ``eval.oracle``). ``trained``: the units the model was trained
    on (:func:`kfr.finetune.checkpoints.trained_units`; None for a model not trained here)."""
    out = ProbeScores()
    if not families:
        return out
    pool = _example_pool(data) if cfg.eval.shots > 0 else None
    documents = {d.id: d for d in data.documents or ()}
    encoder = None
    if cfg.method.retrieve and cfg.retriever.k > 0:
        encoder = load_encoder(cfg.retriever)  # once for every family
    for family in families:
        started = time.perf_counter()
        questions = offered(data)[family]
        build = _builder(cfg, questions, pool)
        retrieval, used, passages = None, {}, None
        if cfg.method.retrieve:
            retrieval = retrieve_passages(
                cfg.retriever, questions, data.documents, cache_dir, encoder=encoder, progress=False
            )
            passages = retrieval.passages
        elif cfg.eval.oracle:
            passages = oracle_passages(questions, data.documents, f"the {family} probes")
        if passages is not None:
            fitted = fit_passages(build, passages, lm.tokenizer, lm.max_length)
            requests, used = fitted.requests, fitted.used
            out.context[family] = dict(fitted.stats)
        else:
            requests = build()
        log.info("probe family %s: %d questions", family, len(questions))
        loglikelihoods, stats = lm.loglikelihood(
            requests, batch_size=cfg.eval.batch_size, progress=cfg.eval.progress
        )
        predictions = predict(questions, loglikelihoods, [r.choice_lengths for r in requests])
        if cfg.eval.style == PromptStyle.cloze:
            prior = score_prior(lm, requests, batch_size=cfg.eval.batch_size)
            out.pmi[family] = pmi_predictions(requests, loglikelihoods, prior)
        out.predictions[family] = predictions
        out.diagnostics[family] = family_diagnostics(family, predictions, documents, trained)
        if retrieval is not None:
            out.metrics[family] = retrieval.recall(questions)
            out.extra[family] = {
                p.question.id: retrieval.record(p.question.id, used.get(p.question.id))
                for p in predictions
            }
        out.scoring[family] = {
            "truncated_questions": stats.truncated_requests,
            "tokens": stats.tokens,
            "score_s": round(time.perf_counter() - started, 3),
        }
    return out


def pmi_summary(
    predictions: Sequence[Prediction], pmi: Sequence[int] | None, *, samples: int, seed: int
) -> dict[str, Any]:
    """``acc_pmi`` and its interval (nothing where PMI was not computed)."""
    if pmi is None:
        return {}
    correct = np.asarray(
        [choice == p.question.answer for p, choice in zip(predictions, pmi, strict=True)],
        dtype=np.float64,
    )
    return {
        "acc_pmi": float(correct.mean()) if len(correct) else float("nan"),
        "acc_pmi_ci95": bootstrap_interval(correct, samples=samples, seed=seed),
    }


def finish_probes(
    cfg: KfrConfig, out: ProbeScores, direct: Sequence[Prediction], data: EvalData
) -> None:
    """Metrics and predictions.jsonl records of every scored family, once the direct questions
    are scored too (the two-hop compositionality gap reads the direct answers)."""
    documents = {d.id: d for d in data.documents or ()}
    if "two_hop" in out.predictions and "mentor" in out.predictions:
        compositionality_gap(
            out.predictions["two_hop"],
            out.diagnostics["two_hop"],
            out.predictions["mentor"],
            direct,
            documents,
        )
    samples, seed = cfg.eval.bootstrap_samples, cfg.eval.bootstrap_seed
    for family, predictions in out.predictions.items():
        summary = summarize(predictions, samples=samples, seed=seed)
        pmi = out.pmi.get(family)
        out.metrics[family] = (
            {key: summary[key] for key in _KEPT}
            | pmi_summary(predictions, pmi, samples=samples, seed=seed)
            | summarize_diagnostics(out.diagnostics[family], samples=samples, seed=seed)
            | out.metrics.get(family, {})
        )
        for index, p in enumerate(predictions):
            record = p.to_json() | {"family": family}
            if pmi is not None:
                record["prediction_pmi"] = pmi[index]
                record["correct_pmi"] = pmi[index] == p.question.answer
            if diagnostics := out.diagnostics[family][index]:
                record["diagnostics"] = diagnostics
            out.records.append(record | out.extra.get(family, {}).get(p.question.id, {}))

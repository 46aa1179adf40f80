"""One cell of the study: load data and model, answer every question, write results.

The flow: data -> [retrieve] -> [fine-tune] -> the language model -> prompts (retrieved passages
fitted into its context) -> scores -> metrics -> :class:`~kfr.cell.results.CellResults`.

Outputs, in the run directory (Hydra's ``hydra.run.dir``):
- ``predictions.jsonl``: per question, each choice's log-likelihood, the predictions, correctness;
  then the probe families' questions (:mod:`kfr.cell.probes`), each record with its ``family``.
- ``control.jsonl`` (cells that fine-tune): per control question the base model's and the cell's
  correctness and log P(answer), and the KL of their next-token distributions
  (:mod:`kfr.evaluation.forgetting`); the report's intervals over seeds read it.
- ``results.json``: metrics with 95% bootstrap intervals, per-subject breakdown, the cell's
  identity, timings, library versions and the config hash. Written last, atomically: its presence
  means the cell is complete, and a later run with the same config hash skips the cell.
"""

from __future__ import annotations

import functools
import logging
import platform
import sys
import time
from collections.abc import Sequence
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kfr.cell.folder import CONTROL_FILE, PREDICTIONS_FILE, RESULTS_FILE
from kfr.cell.probes import (
    check_probe_fewshot,
    check_probe_settings,
    finish_probes,
    oracle_passages,
    pmi_summary,
    score_probes,
    selected_families,
)
from kfr.cell.results import Cell, CellResults
from kfr.core import faults
from kfr.core import identity as cell_identity
from kfr.core.errors import UserError
from kfr.core.identity import check_method, config_hash
from kfr.core.schema import (
    KfrConfig,
    ParaphraseSource,
    PromptStyle,
    TrainingRecipe,
    to_plain,
    typed_config,
)
from kfr.core.storage import atomic_write_json, atomic_write_jsonl
from kfr.data.loading import EvalData, load_eval_data
from kfr.evaluation.calibration import pmi_predictions, score_prior
from kfr.evaluation.context import fit_passages
from kfr.evaluation.control_cache import cached_categories, compare_control, ensure_control_set
from kfr.evaluation.known import KNOWN_SHOTS, category_counts, per_category_accuracy
from kfr.evaluation.metrics import predict, summarize
from kfr.evaluation.prompts import build_requests, check_fewshot, check_style_limits
from kfr.models import load_model
from kfr.retrieval.retrieve import retrieve_passages

log = logging.getLogger(__name__)

_VERSIONED = ("kfr", "torch", "transformers", "numpy", "hydra-core", "omegaconf")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def completed_results(run_dir: Path, digest: str) -> CellResults | None:
    """The results already in ``run_dir`` for the same config hash, if any."""
    results = CellResults.read(Path(run_dir) / RESULTS_FILE)
    return results if results is not None and results.config_hash == digest else None


def _check_template_paraphrases(cfg: KfrConfig) -> None:
    """Template paraphrases come from the generated data set, n_paraphrases per document: more
    cannot be had (known from the config alone, so before the control set loads a model)."""
    augment, facts = cfg.augment, cfg.data.novel_facts
    uses_them = (
        cfg.method.finetune
        and cfg.method.recipe == TrainingRecipe.documents
        and augment.source == ParaphraseSource.template
        and augment.paraphrases > 0
    )
    if not uses_them or facts is None or cfg.data.knowledge:  # not the generated data set's
        return
    if augment.paraphrases > facts.n_paraphrases:
        raise UserError(
            f"{augment.paraphrases} paraphrases per document asked for, the generated data set "
            f"has {facts.n_paraphrases}: raise data.novel_facts.n_paraphrases to at least "
            f"{augment.paraphrases}",
            field="augment.paraphrases",
        )


def check_cell(cfg: KfrConfig) -> None:
    """Settings that cannot work stop the cell before any data or weights are read."""
    check_method(to_plain(cfg.method))
    _check_template_paraphrases(cfg)
    check_probe_settings(cfg)
    if cfg.method.finetune:
        # kfr.finetune imports Lightning (seconds): loaded only by cells that train.
        from kfr.finetune import check_finetune_settings

        check_finetune_settings(cfg)


def _questions_label(cfg: KfrConfig, data: EvalData) -> str:
    label = data.questions_source
    if cfg.data.limit is not None and cfg.data.limit <= len(data.questions):
        label = f"{label} (cut by data.limit={cfg.data.limit})"
    return label


def check_data_fits(cfg: KfrConfig, data: EvalData) -> None:
    """Settings the loaded data cannot honour stop the cell before any model is loaded, instead
    of results labelled with settings that were quietly cut down (e.g. 50-shot with 4
    examples)."""
    labels = {"questions_label": _questions_label(cfg, data), "pool_label": cfg.data.fewshot}
    check_style_limits(data.questions, cfg.eval.style, source=data.questions_source)
    if data.fewshot_pool is not None and cfg.eval.shots > 0:
        check_style_limits(data.fewshot_pool, cfg.eval.style, source=cfg.data.fewshot)
    check_fewshot(cfg.eval.shots, data.questions, data.fewshot_pool, **labels)
    if cfg.eval.known_prompts > 0:
        # Every SliCK prompt holds KNOWN_SHOTS examples from the same pool.
        check_fewshot(
            KNOWN_SHOTS,
            data.questions,
            data.fewshot_pool,
            field="eval.known_prompts",
            asked=f"SliCK categories need {KNOWN_SHOTS} few-shot examples per prompt",
            **labels,
        )
    # A probe family the data does not offer, or too few examples for one: before the model.
    families = selected_families(cfg, data)
    check_probe_fewshot(cfg, data, families)
    if cfg.eval.oracle:  # every question must name the documents it is about
        oracle_passages(data.questions, data.documents, data.questions_source)
        for family in families:
            oracle_passages(data.probes[family], data.documents, f"the {family} probes")


def run_cell(
    cfg: KfrConfig | DictConfig, run_dir: str | Path, *, loggers: Sequence[Any] = ()
) -> CellResults:
    """Run the cell ``cfg`` describes, write its outputs to ``run_dir`` and return the results.

    ``loggers``: Lightning loggers fine-tuning writes its curves to (the cell's tracker's).
    """
    cfg = typed_config(cfg)
    run_dir = Path(run_dir)
    digest = config_hash(cfg)
    if cfg.skip_completed and (done := completed_results(run_dir, digest)) is not None:
        log.info("Results for config %s already in %s: skipping", digest, run_dir)
        return done
    check_cell(cfg)
    started = time.perf_counter()
    cache_dir = Path(cfg.paths.cache_dir)

    data = load_eval_data(
        cfg.data,
        cache_dir,
        need_knowledge=cfg.method.retrieve or cfg.method.finetune or cfg.eval.oracle,
    )
    check_data_fits(cfg, data)
    build = partial(
        build_requests,
        data.questions,
        cfg.eval.style,
        shots=cfg.eval.shots,
        fewshot_pool=data.fewshot_pool,
        fewshot_seed=cfg.eval.fewshot_seed,
        description=cfg.eval.description,
    )
    retrieval = None
    if cfg.method.retrieve:
        retrieval = retrieve_passages(
            cfg.retriever, data.questions, data.documents, cache_dir, progress=cfg.eval.progress
        )
    loaded_data = time.perf_counter()

    # The base model's view, shared by every cell of a model (cached): loaded only on a miss.
    base_identity = cell_identity.digest(cell_identity.identity(cfg)["model"])
    base_model: Any = functools.cache(lambda: load_model(cfg.model, cache_dir))
    control = None
    if cfg.method.finetune:
        # Before training: an unusable control set stops the cell while nothing is spent.
        control = ensure_control_set(cfg.eval, base_model, base_identity, cache_dir)

    finetuned = None
    if cfg.method.finetune:
        from kfr.finetune import finetuned_model

        # Trained once per training key, then reused by every cell that needs that checkpoint.
        finetuned = finetuned_model(cfg, data, cache_dir, loggers=loggers)
    lm = finetuned.lm if finetuned is not None else load_model(cfg.model, cache_dir)
    if finetuned is None:
        base_model = lm
    # Retrieved chunks must fit the model's context: counted with its tokenizer.
    fitted, passages = None, retrieval.passages if retrieval is not None else None
    if passages is None and cfg.eval.oracle:
        passages = oracle_passages(data.questions, data.documents, data.questions_source)
    if passages is None:
        requests = build()
    else:
        fitted = fit_passages(build, passages, lm.tokenizer, lm.max_length)
        requests = fitted.requests
    loaded_model = time.perf_counter()

    loglikelihoods, stats = lm.loglikelihood(
        requests, batch_size=cfg.eval.batch_size, progress=cfg.eval.progress
    )
    pmi = None
    if cfg.eval.style == PromptStyle.cloze:  # a letter's prior says nothing about the facts
        prior = score_prior(lm, requests, batch_size=cfg.eval.batch_size)
        pmi = pmi_predictions(requests, loglikelihoods, prior)
    scored = time.perf_counter()
    # What the model was trained on, for the reversal probes' value-first split.
    trained = finetuned.trained_units if finetuned is not None else None
    probes = score_probes(cfg, data, selected_families(cfg, data), lm, cache_dir, trained=trained)
    probed = time.perf_counter()

    predictions = predict(data.questions, loglikelihoods, [r.choice_lengths for r in requests])
    finish_probes(cfg, probes, predictions, data)
    metrics = summarize(
        predictions, samples=cfg.eval.bootstrap_samples, seed=cfg.eval.bootstrap_seed
    )
    metrics.update(
        pmi_summary(
            predictions, pmi, samples=cfg.eval.bootstrap_samples, seed=cfg.eval.bootstrap_seed
        )
    )
    if retrieval is not None:
        metrics.update(retrieval.recall(data.questions))
    if probes.metrics:
        metrics["probes"] = probes.metrics  # per family; categories and forgetting: direct only
    categories = cached_categories(
        base_model, data.questions, cfg.eval, base_identity, cache_dir, pool=data.fewshot_pool
    )
    if categories is not None:
        metrics["per_category"] = per_category_accuracy(predictions, categories)
    control_info, control_records = None, None
    if control is not None:
        questions, control_info = control
        # 0/1 forgetting, log P change and KL from the base (its side cached), per question too.
        control_metrics, control_records = compare_control(
            base_model, lm, questions, cfg.eval, base_identity, cache_dir
        )
        metrics.update(control_metrics)
        control_info = {**control_info, "base_acc": metrics["control_base_acc"]}
    if categories is not None:
        control_info = {**(control_info or {}), "known_categories": category_counts(categories)}
    analysed = time.perf_counter()
    used = fitted.used if fitted is not None else {}
    records = [
        p.to_json()
        | (retrieval.record(p.question.id, used.get(p.question.id)) if retrieval else {})
        | (
            {"prediction_pmi": pmi[i], "correct_pmi": pmi[i] == p.question.answer}
            if pmi is not None
            else {}
        )
        for i, p in enumerate(predictions)
    ] + probes.records
    results = CellResults(
        cell=Cell(
            experiment=cfg.experiment_name,
            model=cfg.model.name,
            data=cfg.data.name,
            method=cfg.method.name,
            style=cfg.eval.style.value,
            shots=cfg.eval.shots,
            seed=cfg.seed,
        ),
        metrics=metrics,
        scoring={
            "batch_size": cfg.eval.batch_size,
            "max_length": lm.max_length,
            "truncated_questions": stats.truncated_requests,
            "sequences": stats.sequences,
            "tokens": stats.tokens,
            "device": str(lm.device),
            "checkpoint": lm.checkpoint,
            **({"probes": probes.scoring} if probes.scoring else {}),
        },
        data={
            "questions": data.questions_source,
            "knowledge": data.knowledge_source,
            "card": data.card,  # the dataset card beside the questions file (kfr.data.cards)
            "origin": data.origin,  # hub / local-copy provenance (MMLU), else null
        },
        timings={
            "data_s": round(loaded_data - started, 3),
            "load_model_s": round(loaded_model - loaded_data, 3),
            "score_s": round(scored - loaded_model, 3),
            "questions_per_s": round(len(requests) / max(scored - loaded_model, 1e-9), 2),
            "probes_s": round(probed - scored, 3),  # retrieval and scoring of the families
            "analysis_s": round(analysed - probed, 3),  # control set, SliCK categories
            "total_s": round(time.perf_counter() - started, 3),
        },
        versions=library_versions(),
        config_hash=digest,
        config=to_plain(cfg),
        command=list(sys.argv),
        retrieval=None
        if retrieval is None or fitted is None
        else {
            **retrieval.info,
            "context": {"max_length": lm.max_length, **fitted.stats},
            **({"probes_context": probes.context} if probes.context else {}),
        },
        finetune=finetuned.summary if finetuned is not None else None,
        analysis=control_info,
        predictions=records,
    )
    if finetuned is not None:
        from kfr.finetune import copy_training_logs

        copy_training_logs(finetuned.checkpoint, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(run_dir / PREDICTIONS_FILE, records)
    if control_records is not None:
        atomic_write_jsonl(run_dir / CONTROL_FILE, control_records)
    faults.point("cell.predictions_written")
    atomic_write_json(run_dir / RESULTS_FILE, results.to_json())
    return results

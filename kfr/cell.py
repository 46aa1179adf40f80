"""One run = one cell of the study: load data and model, answer every question, write results.

Outputs, in the run directory (Hydra's ``hydra.run.dir``):
- ``predictions.jsonl``: per question, each choice's log-likelihood, the predictions, correctness.
- ``results.json``: metrics with 95% bootstrap intervals, per-subject breakdown, the cell's
  identity, timings, library versions and the config hash. Written last, atomically: its presence
  means the cell is complete, and a later run with the same config hash skips the cell.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kfr.config import PromptStyle, config_hash, validate_config
from kfr.data.loading import load_eval_data
from kfr.evaluation.loglikelihood import score_requests
from kfr.evaluation.metrics import predict, summarize
from kfr.evaluation.prompts import build_requests
from kfr.models import load_model
from kfr.retrieval.retrieve import retrieve_passages
from kfr.storage import atomic_write_json, atomic_write_jsonl

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
_VERSIONED = ("kfr", "torch", "transformers", "numpy", "hydra-core", "omegaconf")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def completed_results(run_dir: Path, digest: str) -> dict[str, Any] | None:
    """The results already in ``run_dir`` for the same config hash, if any."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return results if results.get("config_hash") == digest else None


def _check_method(cfg: DictConfig) -> None:
    if cfg.method.finetune:
        # Settings that cannot train stop the cell before any data or weights are read.
        from kfr.finetune.modes import check_finetune_settings

        check_finetune_settings(cfg)


def format_summary(results: dict[str, Any]) -> str:
    m = results["metrics"]
    cell = results["cell"]
    lines = [
        f"{cell['model']} | {cell['data']} | method={cell['method']} | "
        f"{cell['style']} {cell['shots']}-shot | n={m['n']}",
        f"  acc      {m['acc']:.3f}  95% CI [{m['acc_ci95'][0]:.3f}, {m['acc_ci95'][1]:.3f}]"
        f"  (chance {m['chance']:.3f})",
        f"  acc_norm {m['acc_norm']:.3f}  95% CI [{m['acc_norm_ci95'][0]:.3f}, "
        f"{m['acc_norm_ci95'][1]:.3f}]",
    ]
    if m.get("recall_at_k") is not None:
        k = results["retrieval"]["k"]
        recall = f"  recall@{k} {m['recall_at_k']:.3f}"
        lines.append(recall + (f"  recall@1 {m['recall_at_1']:.3f}" if k > 1 else ""))
    if len(m["per_subject"]) > 1:
        width = max(len(s) for s in m["per_subject"])
        for subject, sm in m["per_subject"].items():
            lines.append(f"    {subject:<{width}}  acc {sm['acc']:.3f}  n={sm['n']}")
    return "\n".join(lines)


def run_cell(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the cell ``cfg`` describes, write its outputs to ``run_dir`` and return the results."""
    run_dir = Path(run_dir)
    validate_config(cfg)
    digest = config_hash(cfg)
    if cfg.skip_completed and (done := completed_results(run_dir, digest)) is not None:
        log.info("Results for config %s already in %s: skipping", digest, run_dir)
        return done
    _check_method(cfg)
    started = time.perf_counter()
    cache_dir = Path(cfg.paths.cache_dir)

    data = load_eval_data(
        cfg.data, cache_dir, need_knowledge=cfg.method.retrieve or cfg.method.finetune
    )
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

    finetuned = None
    if cfg.method.finetune:  # imported here: base and rag cells do not load Lightning
        from kfr.finetune import finetuned_model
        from kfr.tracking import lightning_loggers

        # Training curves go into this cell's W&B run when there is one (kfr.sweeps.task opens
        # it); the checkpoint is trained once per key, then reused.
        finetuned = finetuned_model(cfg, data, cache_dir, loggers=lightning_loggers(cfg))
    lm = finetuned.lm if finetuned is not None else load_model(cfg.model, cache_dir)
    # Retrieved chunks must fit the model's context: counted with its tokenizer.
    requests = build() if retrieval is None else retrieval.fit(build, lm.tokenizer, lm.max_length)
    loaded_model = time.perf_counter()

    loglikelihoods, stats = score_requests(
        lm.model,
        lm.tokenizer,
        requests,
        max_length=lm.max_length,
        batch_size=cfg.eval.batch_size,
        device=lm.device,
        progress=cfg.eval.progress,
    )
    scored = time.perf_counter()

    predictions = predict(data.questions, loglikelihoods, [r.choice_lengths for r in requests])
    metrics = summarize(
        predictions, samples=cfg.eval.bootstrap_samples, seed=cfg.eval.bootstrap_seed
    )
    if retrieval is not None:
        metrics.update(retrieval.recall(data.questions))
    results = {
        "cell": {
            "experiment": cfg.experiment_name,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "method": cfg.method.name,
            "style": PromptStyle(cfg.eval.style).value,
            "shots": cfg.eval.shots,
            "seed": cfg.seed,
        },
        "metrics": metrics,
        "scoring": {
            "batch_size": cfg.eval.batch_size,
            "max_length": lm.max_length,
            "truncated_questions": stats.truncated_requests,
            "sequences": stats.sequences,
            "tokens": stats.tokens,
            "device": str(lm.device),
            "checkpoint": lm.checkpoint,
        },
        "data": {
            "questions": data.questions_source,
            "knowledge": data.knowledge_source,
            "card": data.card,  # the dataset card beside the questions file (kfr.data.cards)
            "origin": data.origin,  # hub / local-copy provenance (MMLU), else null
        },
        "timings": {
            "data_s": round(loaded_data - started, 3),
            "load_model_s": round(loaded_model - loaded_data, 3),
            "score_s": round(scored - loaded_model, 3),
            "questions_per_s": round(len(requests) / max(scored - loaded_model, 1e-9), 2),
            "total_s": round(time.perf_counter() - started, 3),
        },
        "versions": library_versions(),
        "config_hash": digest,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "command": sys.argv,
    }
    if retrieval is not None:
        results["retrieval"] = retrieval.info
    if finetuned is not None:
        from kfr.finetune import copy_training_logs

        results["finetune"] = finetuned.summary
        copy_training_logs(finetuned.checkpoint, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    records = (
        p.to_json() | (retrieval.record(p.question.id) if retrieval else {}) for p in predictions
    )
    atomic_write_jsonl(run_dir / PREDICTIONS_FILE, records)
    atomic_write_json(run_dir / RESULTS_FILE, results)
    return results

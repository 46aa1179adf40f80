"""Fine-tuned checkpoints: train once per training key, reuse everywhere, load for scoring.

``<cache>/finetuned/<model>-<mode>-<key>/`` holds the adapter (``adapter/``) or full model
(``model/``), the training log (``logs/metrics.csv``) and ``training.json`` (the summary results
report). It is built by :func:`kfr.core.storage.build_directory_once`: two jobs of a sweep that need
the same checkpoint (``ft`` and ``ft_rag`` cells) train it once, the second waits and loads it,
and a crash mid-training leaves nothing that looks finished.

Distributed training (trainer=ddp/fsdp) starts one process per device, each running the cell:
global rank 0 builds the checkpoint under the lock; the other ranks train beside it in a scratch
directory (they must join every collective step) and then exit, leaving scoring to rank 0.

A job killed mid-training (SLURM preemption or timeout, then requeued by submitit) leaves
``<name>.resume/last.ckpt`` (written every ``trainer.checkpoint_every_min`` minutes); the next
job to build the same key continues from it, and the folder is removed once the model is saved.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfr.core.devices import secondary_rank
from kfr.core.schema import KfrConfig
from kfr.core.storage import (
    READY_MARKER,
    atomic_write_json,
    atomic_write_text,
    build_directory_once,
)
from kfr.data.loading import EvalData
from kfr.finetune.keys import training_key
from kfr.finetune.modes import check_finetune_settings, strategy
from kfr.finetune.recipes import TrainingSet, training_set
from kfr.finetune.train import LOG_DIR, METRICS_FILE, train
from kfr.generation import TextGenerator
from kfr.models.lm import LanguageModel

log = logging.getLogger(__name__)

SUMMARY_FILE = "training.json"
RUN_SUBDIR = "finetune"  # where a run directory gets its copy of the training log


@dataclass
class FinetunedModel:
    lm: LanguageModel  # ready to score
    summary: dict[str, Any]  # results.json's "finetune" block
    checkpoint: Path
    # The units the loss was taken on, for the probes' value-first split: every sentence of the
    # documents and augmentation texts; for supervised examples the question line read with the
    # answer learnt after it, as one unit (passages only read in a prompt and a teacher's
    # context are left out).
    trained_units: list[str] = field(default_factory=list)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def trained_units(training: TrainingSet) -> list[str]:
    """What :attr:`FinetunedModel.trained_units` holds for ``training``."""
    documents = list(training.texts)
    units = []
    for example in training.examples or ():
        if example.document is not None:
            documents.append(example.document)
        else:  # the question line of the prompt, then the answer learnt after it
            lines = example.context.rstrip().splitlines() or [""]
            question = next((ln for ln in reversed(lines) if ln.startswith("Question:")), lines[-1])
            units.append(f"{question} {example.target.strip()}")
    return [s for text in documents for s in _SENTENCE_END.split(text) if s] + units


def checkpoint_dir(cfg: KfrConfig, cache_dir: str | Path, key: str) -> Path:
    mode = cfg.finetune.mode
    mode = mode.value if hasattr(mode, "value") else mode
    return Path(cache_dir) / "finetuned" / f"{cfg.model.name}-{mode}-{key}"


def resume_checkpoint_dir(target: Path) -> Path:
    """Where training towards ``target`` keeps its resumable checkpoint until it finishes."""
    return target.with_name(target.name + ".resume")


def finetuned_model(
    cfg: KfrConfig,
    data: EvalData,
    cache_dir: str | Path,
    *,
    loggers: Sequence[Any] = (),
    generator: TextGenerator | None = None,
) -> FinetunedModel:
    """The model of cfg fine-tuned on data's knowledge base: trained now, or reused."""
    check_finetune_settings(cfg)
    training = training_set(cfg, data, cache_dir, generator=generator)
    key = training_key(cfg, training.content())
    target = checkpoint_dir(cfg, cache_dir, key)
    resume_dir = resume_checkpoint_dir(target)
    rank = secondary_rank()
    if rank and not (target / READY_MARKER).exists():
        with tempfile.TemporaryDirectory(prefix=f"kfr-rank{rank}-") as scratch:
            _train(cfg, training, cache_dir, Path(scratch), loggers, resume_dir)
        log.info("Rank %d: training done; rank 0 saves and scores", rank)
        raise SystemExit(0)
    if rank:
        raise SystemExit(0)

    trained_here = False

    def build(out_dir: Path) -> None:
        nonlocal trained_here
        summary = _train(cfg, training, cache_dir, out_dir, loggers, resume_dir)
        summary.update(key=key, **training.stats)
        atomic_write_json(out_dir / SUMMARY_FILE, summary)
        trained_here = True

    build_directory_once(target, build)
    shutil.rmtree(resume_dir, ignore_errors=True)  # finished: nothing left to resume
    summary = json.loads((target / SUMMARY_FILE).read_text(encoding="utf-8"))
    # The training data's record as this version of kfr writes it (a checkpoint trained by an
    # older one kept the record of its day: same data, older shape).
    summary.update(training.stats, checkpoint=str(target), reused=not trained_here)
    if not trained_here:
        log.info("Reusing the fine-tuned checkpoint %s", target)
    lm = strategy(cfg.finetune.mode).load_for_scoring(cfg, target, cache_dir)
    return FinetunedModel(lm, summary, target, trained_units(training))


def _train(
    cfg: KfrConfig,
    training: TrainingSet,
    cache_dir: str | Path,
    out_dir: Path,
    loggers: Sequence[Any],
    resume_dir: Path,
) -> dict[str, Any]:
    return train(
        cfg,
        training.texts,
        cache_dir,
        out_dir,
        loggers=loggers,
        resume_dir=resume_dir,
        examples=training.examples,
        extras=training.extras,
    )


def copy_training_logs(checkpoint: Path, run_dir: Path) -> Path:
    """Copy the training log and summary into ``run_dir/finetune/`` (atomically, file by file)."""
    out = run_dir / RUN_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    for source in (checkpoint / LOG_DIR / METRICS_FILE, checkpoint / SUMMARY_FILE):
        if source.is_file():
            atomic_write_text(out / source.name, source.read_text(encoding="utf-8"))
    return out

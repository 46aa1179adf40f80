"""A Weights & Biases run for one cell, written under the run directory (``<run_dir>/wandb/``).

Offline runs need no account and no network: ``wandb sync <run_dir>/wandb/offline-run-*``
(or slurm/sync_wandb.sh for a whole output tree) uploads them later.

One run per cell: its id is derived from the cell's folder and config hash (:func:`run_id`), and
``wandb.init`` resumes it (``resume="allow"``). A cell that starts again after its job was
killed, timed out or requeued (SLURM) continues the same run: offline, each attempt leaves an
``offline-run-<time>-<id>`` folder with that one id, and ``wandb sync`` uploads them in order
into one run, the fine-tuning curve continued from the resumed step. A cell that already has
results and is run again on purpose (``skip_completed=false``) starts a new run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kfr.cell.folder import RESULTS_FILE
from kfr.cell.results import CellResults
from kfr.core.errors import UserError
from kfr.core.identity import config_hash
from kfr.core.schema import KfrConfig, to_plain
from kfr.tracking.base import flat_metrics, run_name, run_tags

log = logging.getLogger(__name__)

WANDB_MODES = ("offline", "online", "disabled")
# Columns of the predictions table, in this order when present in the predictions.
_TABLE_COLUMNS = (
    "id",
    "family",  # probe questions (kfr.cell.probes); direct questions leave it empty
    "subject",
    "answer",
    "prediction",
    "correct",
    "prediction_norm",
    "correct_norm",
    "prediction_pmi",  # cloze prompts: the PMI choice (kfr.evaluation.calibration)
    "correct_pmi",
    "diagnostics",  # probe questions: lure, position bias, ... (kfr.cell.probe_diagnostics)
    "loglikelihoods",
    "retrieved_ids",
)


def wandb_mode(cfg: KfrConfig | DictConfig) -> str:
    """WANDB_MODE from the environment when set, else logger.wandb.mode."""
    if os.environ.get("WANDB_MODE") == "":
        del os.environ["WANDB_MODE"]  # set but empty: unset (wandb itself rejects "")
    mode = os.environ.get("WANDB_MODE") or str(cfg.logger.wandb.mode)
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in WANDB_MODES:
        raise UserError(
            f"'{mode}' is not a W&B mode: one of {', '.join(WANDB_MODES)}",
            field="logger.wandb.mode",
        )
    return mode


def run_id(cfg: KfrConfig, run_dir: Path) -> str:
    """The W&B run id of the cell in ``run_dir``: the same for every attempt at the cell (a
    rerun after a kill, a requeued SLURM job), a new one when finished results are redone."""
    key = f"{Path(run_dir).resolve()}\0{config_hash(cfg)}"
    ident = "kfr-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    if (Path(run_dir) / RESULTS_FILE).is_file():
        ident += f"-{time.strftime('%Y%m%d%H%M%S')}"
    return ident


class WandbTracker:
    """One W&B run per cell. Where the cell trains, Lightning writes into this same run through
    :meth:`training_loggers` (a ``WandbLogger`` on it); the cell's results are logged here."""

    def __init__(self, cfg: KfrConfig, run_dir: Path, mode: str) -> None:
        import wandb

        settings = cfg.logger.wandb
        run_dir.mkdir(parents=True, exist_ok=True)
        config = to_plain(cfg)
        config["config_hash"] = config_hash(cfg)
        config["run_dir"] = str(run_dir)
        try:
            self.run = wandb.init(
                project=str(settings.project),
                entity=settings.entity,
                group=str(cfg.experiment_name),
                job_type=str(cfg.method.name),
                tags=list(dict.fromkeys([*run_tags(cfg), *map(str, settings.tags)])),
                name=run_name(cfg),
                id=run_id(cfg, run_dir),
                # The same run when the cell starts again after its job was killed or requeued.
                resume="allow",
                config=config,
                dir=str(run_dir),
                mode=mode,
                # A run left open by an earlier cell of this process is closed, never reused.
                reinit="finish_previous",
                settings=wandb.Settings(silent=True),
            )
        except wandb.errors.UsageError as err:
            raise UserError(
                f"W&B could not start a run ({str(err).splitlines()[0]}); for online runs "
                "`wandb login` first, or log offline: logger.wandb.mode=offline",
                field="logger.wandb",
            ) from None
        self.log_predictions = bool(settings.log_predictions)
        self.mode = mode

    def training_loggers(self) -> list[Any]:
        # Lightning is imported only by cells that train; experiment= attaches the logger to
        # this run instead of starting another one.
        from lightning.pytorch.loggers import WandbLogger

        return [WandbLogger(experiment=self.run)]

    def log_results(self, results: CellResults) -> None:
        import wandb

        metrics = flat_metrics(results.to_json())
        self.run.log({k: v for k, v in metrics.items() if not k.startswith("timings/")})
        self.run.summary.update(metrics)
        self.run.summary["config_hash"] = results.config_hash
        if self.log_predictions:
            table = _predictions_table(results.predictions or [])
            if table is not None:
                self.run.log({"predictions": wandb.Table(**table)})

    def close(self, error: BaseException | None) -> None:
        if error is not None:
            self.run.summary["error"] = f"{type(error).__name__}: {error}"
        self.run.finish(exit_code=0 if error is None else 1)
        if isinstance(error, UserError) and self.mode == "offline":
            # Bad input is not an experiment: leave no run to sync (and, for a single run,
            # nothing in the run directory; kfr.cli removes Hydra's files).
            self._remove_offline_run()

    def _remove_offline_run(self) -> None:
        run_files = Path(self.run.dir).parent  # <run_dir>/wandb/offline-run-<time>-<id>
        shutil.rmtree(run_files, ignore_errors=True)
        wandb_dir = run_files.parent
        if wandb_dir.name == "wandb" and not any(wandb_dir.glob("*run-*")):
            shutil.rmtree(wandb_dir, ignore_errors=True)


def _predictions_table(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not records:
        return None
    present = set().union(*records)
    columns = [c for c in _TABLE_COLUMNS if c in present]
    rows = []
    for record in records:
        row = []
        for column in columns:
            value = record.get(column)
            # Lists (log-likelihoods, retrieved ids) as JSON text: one type per column.
            row.append(json.dumps(value) if isinstance(value, list | dict) else value)
        rows.append(row)
    return {"columns": columns, "data": rows}

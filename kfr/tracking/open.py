"""Open the logger ``cfg.logger`` names for one cell, and always close it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kfr.config import TrackerKind
from kfr.sweeps.jobs import secondary_process
from kfr.tracking.base import NullTracker, Tracker
from kfr.tracking.csv_log import CsvTracker

log = logging.getLogger(__name__)


def tracker_kind(cfg: DictConfig) -> TrackerKind:
    """cfg.logger.name, except that W&B turned off (WANDB_MODE=disabled) falls back to CSV."""
    kind = TrackerKind(cfg.logger.name)
    if kind is TrackerKind.wandb:
        from kfr.tracking.wandb_run import wandb_mode

        if wandb_mode(cfg) == "disabled":
            return TrackerKind.csv
    return kind


@contextmanager
def open_tracker(cfg: DictConfig, run_dir: str | Path) -> Iterator[Tracker]:
    """The cell's tracker; closed (W&B: ``finish``, exit code 1 on error) however the block ends."""
    run_dir = Path(run_dir)
    kind = TrackerKind.none if secondary_process() else tracker_kind(cfg)
    tracker: Tracker
    if kind is TrackerKind.wandb:
        from kfr.tracking.wandb_run import WandbTracker, wandb_mode

        tracker = WandbTracker(cfg, run_dir, wandb_mode(cfg))
    elif kind is TrackerKind.csv:
        tracker = CsvTracker(cfg)
    else:
        tracker = NullTracker()
    error: BaseException | None = None
    try:
        yield tracker
    except BaseException as err:
        error = err
        raise
    finally:
        try:
            tracker.close(error)
        except Exception:  # closing must not hide the cell's own error or result
            log.exception("Could not close the %s logger", kind.value)


def lightning_loggers(cfg: DictConfig) -> list[Any]:
    """Lightning loggers that write fine-tuning curves into this cell's W&B run ([] otherwise).

    Call it inside :func:`open_tracker`'s block (``kfr.cell.run_cell`` is) and pass the list to
    ``kfr.finetune.finetuned_model(..., loggers=...)``. Fine-tuning always writes its own CSV
    log too (``finetune/metrics.csv`` in the run directory).
    """
    if TrackerKind(cfg.logger.name) is not TrackerKind.wandb:
        return []
    import wandb

    if wandb.run is None:
        return []
    from lightning.pytorch.loggers import WandbLogger

    # experiment=: attach to the cell's run instead of starting another one.
    return [WandbLogger(experiment=wandb.run)]

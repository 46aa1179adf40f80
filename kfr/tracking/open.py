"""Open the logger ``cfg.logger`` names for one cell, and always close it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from kfr.core.devices import secondary_process
from kfr.core.schema import KfrConfig, TrackerKind, typed_config
from kfr.tracking.base import NullTracker, Tracker
from kfr.tracking.csv_log import CsvTracker
from kfr.tracking.wandb_run import WandbTracker, wandb_mode

log = logging.getLogger(__name__)


def tracker_kind(cfg: KfrConfig | DictConfig) -> TrackerKind:
    """cfg.logger.name, except that W&B turned off (WANDB_MODE=disabled) falls back to CSV."""
    kind = TrackerKind(cfg.logger.name)
    if kind is TrackerKind.wandb and wandb_mode(cfg) == "disabled":
        return TrackerKind.csv
    return kind


@contextmanager
def open_tracker(cfg: KfrConfig | DictConfig, run_dir: str | Path) -> Iterator[Tracker]:
    """The cell's tracker; closed (W&B: ``finish``, exit code 1 on error) however the block ends.

    Ranks > 0 of a distributed cell get one that logs nothing: rank 0 logs the cell.
    """
    cfg = typed_config(cfg)
    run_dir = Path(run_dir)
    kind = TrackerKind.none if secondary_process() else tracker_kind(cfg)
    tracker: Tracker
    if kind is TrackerKind.wandb:
        tracker = WandbTracker(cfg, run_dir, wandb_mode(cfg))
    elif kind is TrackerKind.csv:
        tracker = CsvTracker(cfg, run_dir)
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

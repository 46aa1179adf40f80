"""What one job of ``kfr`` runs: skip a finished cell, else run it with its logger open.

In a multirun (``kfr -m``) a job never raises: a failed cell writes ``failed.json`` into its
folder, logs one line and returns :data:`~kfr.sweeps.jobs.FAILED_SCORE`, so the sweep goes on
with the other cells and the sweeper (Optuna) gets a number, never NaN. A single run lets the
error through: ``kfr.cli`` turns a user error into one line and exit code 2.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kfr.cell import completed_results, format_summary, run_cell
from kfr.config import config_hash, validate_config
from kfr.sweeps.jobs import FAILED_FILE, FAILED_SCORE, clear_failure, record_failure
from kfr.tracking import open_tracker

log = logging.getLogger("kfr")


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_tracked_cell(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Any], bool]:
    """(results, reused): the finished cell's results, or run it now with its logger open."""
    validate_config(cfg)
    if cfg.skip_completed and (done := completed_results(run_dir, config_hash(cfg))) is not None:
        log.info("Results for this cell already in %s: skipping", run_dir)
        return done, True
    with open_tracker(cfg, run_dir) as tracker:
        results = run_cell(cfg, run_dir)
        tracker.log_results(results, run_dir)
    return results, False


def objective(results: dict[str, Any], metric: str) -> float:
    """The number a sweeper optimises: ``results["metrics"][metric]``, FAILED_SCORE if unusable."""
    value = results.get("metrics", {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        log.warning("metric '%s' is not a number in these results (%r); returning %s",
                    metric, value, FAILED_SCORE)  # fmt: skip
        return FAILED_SCORE
    return float(value)


def run_sweep_cell(cfg: DictConfig, run_dir: Path) -> float:
    """One job of a multirun: never raises an Exception (SystemExit/KeyboardInterrupt pass)."""
    try:
        results, reused = run_tracked_cell(cfg, run_dir)
    except Exception as err:  # one cell's failure must not stop the other cells of the sweep
        path = record_failure(run_dir, err)
        log.error("Cell failed: %s: %s (details: %s)", type(err).__name__, err, path)
        return FAILED_SCORE
    clear_failure(run_dir)
    print(("[reused] " if reused else "") + format_summary(results))
    return objective(results, str(cfg.optimized_metric))


__all__ = ["FAILED_FILE", "is_multirun", "objective", "run_sweep_cell", "run_tracked_cell"]

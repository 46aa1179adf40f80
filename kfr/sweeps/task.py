"""What one job of ``kfr`` runs: skip a finished cell, else run it with its logger open.

The composed config becomes typed objects here, once (:func:`kfr.core.schema.typed_config`).
In a multirun (``kfr -m``) a job never raises: a failed cell writes ``failed.json`` into its
folder, logs one line and returns :data:`FAILED_SCORE`, so the sweep goes on with the other
cells and the sweeper (Optuna) gets a number, never NaN. The exception is a full disk or a
folder that may not be written (:func:`kfr.core.storage.storage_error`): every cell would fail
alike, so the sweep stops with one line and exit code 2. A single run lets the error through:
``kfr.cli.main`` turns a user error into one line and exit code 2.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig

from kfr.cell import CellResults, completed_results, run_cell
from kfr.cell.folder import clear_failure, record_failure
from kfr.core import faults
from kfr.core.devices import distributed_process, secondary_process
from kfr.core.errors import USER_ERROR_EXIT_CODE
from kfr.core.identity import config_hash
from kfr.core.schema import KfrConfig, typed_config
from kfr.core.storage import storage_error
from kfr.tracking import open_tracker

log = logging.getLogger("kfr")

CELL_LOCK = ".cell.lock"
# What a sweep job returns to the sweeper when its cell failed: below every accuracy, never NaN
# (Optuna's samplers cannot use NaN, and a failed trial must not look promising).
FAILED_SCORE = -1.0


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_tracked_cell(cfg: KfrConfig | DictConfig, run_dir: Path) -> tuple[CellResults, bool]:
    """(results, reused): the finished cell's results, or run it now with its logger open."""
    cfg = typed_config(cfg)
    if cfg.skip_completed and (done := completed_results(run_dir, config_hash(cfg))) is not None:
        log.info("Results for this cell already in %s: skipping", run_dir)
        return done, True
    with open_tracker(cfg, run_dir) as tracker:
        # Training curves only where the cell trains: the loggers are Lightning's.
        loggers = tracker.training_loggers() if cfg.method.finetune else ()
        results = run_cell(cfg, run_dir, loggers=loggers)
        tracker.log_results(results)
    return results, False


def objective(results: CellResults | dict, metric: str) -> float:
    """The number a sweeper optimises: the results' ``metrics[metric]``, FAILED_SCORE if
    unusable."""
    metrics = results.metrics if isinstance(results, CellResults) else results.get("metrics", {})
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        log.warning(
            "metric '%s' is not a number in these results (%r); returning %s",
            metric,
            value,
            FAILED_SCORE,
        )
        return FAILED_SCORE
    return float(value)


def run_sweep_cell(cfg: DictConfig, run_dir: Path) -> float:
    """One job of a multirun: never raises an Exception (SystemExit/KeyboardInterrupt pass)."""
    try:
        typed = typed_config(cfg)
        if secondary_process() and not typed.method.finetune:
            # The extra tasks of a multi-GPU job (SLURM tasks_per_node > 1) only join training.
            return 0.0
        with _cell_lock(run_dir) as mine:
            if not mine:
                log.info(
                    "Another job of this sweep is running the cell in %s; leaving it to it", run_dir
                )
                return FAILED_SCORE
            results, reused = run_tracked_cell(typed, run_dir)
            faults.point("cell.done")
    except SystemExit as done:
        # Ranks > 0 of a distributed fine-tuning leave with exit code 0 once training is done;
        # under submitit a task must return for its job to count as finished.
        if secondary_process() and done.code in (0, None):
            return 0.0
        raise
    except Exception as err:  # one cell's failure must not stop the other cells of the sweep
        if (full := storage_error(err, run_dir)) is not None:
            # A full disk or a read-only folder fails every cell alike (and failed.json could
            # not be written either): stop the sweep with one line, exit code 2 (SystemExit
            # passes through Hydra's job runner, which would log any Exception's traceback).
            print(f"kfr: error: {full}", file=sys.stderr)
            raise SystemExit(USER_ERROR_EXIT_CODE) from None
        path = record_failure(run_dir, err)
        log.error("Cell failed: %s: %s (details: %s)", type(err).__name__, err, path)
        return FAILED_SCORE
    clear_failure(run_dir)
    print(("[reused] " if reused else "") + results.summary())
    return objective(results, str(typed.optimized_metric))


@contextmanager
def _cell_lock(run_dir: Path) -> Iterator[bool]:
    """True when this job may run the cell. Jobs that share a cell folder (they differ only in
    settings the method ignores) run it once: with a parallel launcher (SLURM), a job that finds
    the folder busy leaves at once instead of holding its GPUs idle; a sequential launcher never
    finds it busy, so later jobs find the results. The ranks of one distributed cell take no lock:
    they must run together."""
    if distributed_process():
        yield True
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / CELL_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


__all__ = ["FAILED_SCORE", "is_multirun", "objective", "run_sweep_cell", "run_tracked_cell"]

"""The end of a sweep: count its cells, name the failed and unfinished ones, print the report.

``SweepSummary`` is a Hydra callback (conf/hydra/default.yaml, ``hydra.callbacks``); it runs in
the process that drives the sweep, after every job has returned, whatever the launcher (local,
SLURM). It scans the sweep directory rather than the jobs' return values, so cells finished by an
earlier, interrupted run of the same sweep are counted too. The report (``kfr-report``) goes to
``<sweep dir>/report/`` and its tables are printed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kfr.cell.folder import FAILED_FILE, format_failures, scan_cells
from kfr.core import faults
from kfr.core.errors import UserError
from kfr.report import build_report, write_report

log = logging.getLogger("kfr")

REPORT_SUBDIR = "report"
_last_sweep: dict[str, int] = {}


def failed_cells_of_last_sweep() -> int:
    """How many cells of the sweep this process just ran failed (0 after a single run)."""
    return _last_sweep.get("failed_now", 0)


def check_required_settings(config: DictConfig) -> None:
    """Stop before any job when a required setting (``???``) is given neither on the command
    line nor by the sweep's grid: every cell would fail the same way."""
    missing = OmegaConf.missing_keys(
        OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    )
    swept = {str(k) for k in (config.hydra.sweeper.get("params") or {})}
    swept |= {str(o).split("=", 1)[0].lstrip("+~") for o in config.hydra.overrides.task}
    missing = sorted(m for m in missing if m not in swept)
    if missing:
        raise UserError(
            "required by every cell and not set: "
            + ", ".join(missing)
            + " (give each on the command line, e.g. data.questions=PATH)"
        )


class SweepSummary(Callback):
    def __init__(self, report: bool = True, print_report: bool = True) -> None:
        self.report = report
        self.print_report = print_report
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        _last_sweep.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._summarise(Path(str(config.hydra.sweep.dir)))
        except Exception:  # a summary must never turn a finished sweep into a crash
            log.exception("Could not summarise the sweep")

    def _summarise(self, sweep_dir: Path) -> None:
        cells = scan_cells([sweep_dir])
        if not cells:  # a sweep of another command of the same config tree (kfr-index -m)
            return
        counts = {
            s: sum(c.status == s for c in cells)
            for s in ("complete", "failed", "incomplete", "unreadable")
        }
        failed_now = sum(
            c.status == "failed" and (c.path / FAILED_FILE).stat().st_mtime >= self.started - 1
            for c in cells
        )
        _last_sweep.update(counts, failed_now=failed_now)
        lines = [
            f"Sweep {sweep_dir}: {len(cells)} cells, {counts['complete']} with results, "
            f"{counts['failed']} failed, {counts['incomplete']} without a result"
            + (f", {counts['unreadable']} unreadable" if counts["unreadable"] else "")
        ]
        lines += format_failures(cells)
        if counts["failed"] or counts["incomplete"] or counts["unreadable"]:
            lines.append("  Run the same command again to retry them: finished cells are skipped.")
        print("\n".join(lines), flush=True)
        if not self.report or not counts["complete"]:
            return
        faults.point("sweep.report")
        report = build_report([sweep_dir])
        out = write_report(report, sweep_dir / REPORT_SUBDIR)
        if self.print_report:
            print(report.markdown(), flush=True)
        print(f"Report: {out / 'report.md'}", flush=True)

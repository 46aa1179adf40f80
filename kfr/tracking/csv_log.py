"""The logger when W&B is off: ``metrics.csv`` in the run directory, one row for the cell."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from kfr.cell.results import CellResults
from kfr.core.schema import KfrConfig
from kfr.core.storage import atomic_write_text
from kfr.tracking.base import flat_metrics, run_name, run_tags

METRICS_CSV = "metrics.csv"


class CsvTracker:
    def __init__(self, cfg: KfrConfig, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.identity = {
            "name": run_name(cfg),
            "group": str(cfg.experiment_name),
            "job_type": str(cfg.method.name),
            "tags": " ".join(run_tags(cfg)),
        }

    def training_loggers(self) -> list[Any]:
        return []  # fine-tuning writes its own CSV log (finetune/metrics.csv)

    def log_results(self, results: CellResults) -> None:
        row = {
            **self.identity,
            "config_hash": results.config_hash,
            **flat_metrics(results.to_json()),
        }
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
        atomic_write_text(self.run_dir / METRICS_CSV, buffer.getvalue())

    def close(self, error: BaseException | None) -> None:
        pass

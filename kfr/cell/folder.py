"""A cell's folder: what it holds when the cell finished, failed or never ended, and finding
the cell folders under a sweep directory.

A folder holds ``results.json`` when the cell finished (written last, atomically, by
:mod:`kfr.cell.run`), ``failed.json`` (the error) when it failed, and only Hydra's ``.hydra/``
when it started and never ended (killed, timed out, or still running); a ``results.json`` that
does not parse as a kfr result (truncated, damaged) makes the folder "unreadable". Sweeps
(which write ``failed.json``) and the report (which reads all three) both go through this module.
"""

from __future__ import annotations

import json
import os
import platform
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.core.storage import atomic_write_json

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
# Per control question (fine-tuned cells): base and cell correctness, log P change, KL.
CONTROL_FILE = "control.jsonl"
FAILED_FILE = "failed.json"
HYDRA_DIR = ".hydra"
# Folders inside a cell folder that never hold other cells.
_NOT_CELLS = {"wandb", ".submitit", "finetune", HYDRA_DIR, "report", "logs"}


def _hydra_context() -> dict[str, Any]:
    """The job's overrides and number, when running under Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    return {
        "overrides": list(hydra_cfg.overrides.task),
        "job_num": hydra_cfg.job.get("num"),
    }


def record_failure(run_dir: str | Path, err: BaseException) -> Path:
    """Write ``failed.json`` (error type, message, traceback, overrides, where, when)."""
    path = Path(run_dir) / FAILED_FILE
    record = {
        "error": type(err).__name__,
        "message": str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
        "user_error": isinstance(err, UserError),
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        **_hydra_context(),
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID")),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path, record)
    return path


def clear_failure(run_dir: str | Path) -> None:
    """Remove the failure record of an earlier attempt once the cell has succeeded."""
    (Path(run_dir) / FAILED_FILE).unlink(missing_ok=True)


@dataclass
class CellFolder:
    """One cell folder of a sweep (or a single run's directory) and what it holds."""

    path: Path
    status: str  # complete | failed | incomplete | unreadable (results.json damaged)
    results: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    overrides: list[str] | None = None

    @property
    def label(self) -> str:
        """A sweep cell's folder name (its overrides); a single run's overrides."""
        if "=" in self.path.name or self.overrides is None:
            return self.path.name
        return " ".join(self.overrides) or "(no overrides)"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _read_overrides(folder: Path) -> list[str] | None:
    path = folder / HYDRA_DIR / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        return [str(o) for o in OmegaConf.load(path)]
    except Exception:  # a half-written file from a killed job: the folder name still names it
        return None


def read_cell_folder(folder: Path) -> CellFolder | None:
    """What ``folder`` holds, or None when it is not a cell folder at all."""
    results_path, failed_path = folder / RESULTS_FILE, folder / FAILED_FILE
    if not (results_path.is_file() or failed_path.is_file() or (folder / HYDRA_DIR).is_dir()):
        return None
    overrides = _read_overrides(folder)
    results = _read_json(results_path) if results_path.is_file() else None
    if results is not None and "metrics" in results:
        return CellFolder(folder, "complete", results=results, overrides=overrides)
    if results_path.is_file():
        # There and written last, atomically: a file that does not parse was damaged after the
        # cell finished (a truncated copy, a full disk), not a cell still running.
        return CellFolder(folder, "unreadable", overrides=overrides)
    failure = _read_json(failed_path) if failed_path.is_file() else None
    if failure is not None:
        return CellFolder(folder, "failed", failure=failure, overrides=overrides)
    return CellFolder(folder, "incomplete", overrides=overrides)


def _walk(root: Path) -> Iterator[Path]:
    for current, dirs, _files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_CELLS and not d.startswith(".tmp"))
        yield Path(current)


def scan_cells(roots: Iterable[str | Path]) -> list[CellFolder]:
    """Every cell folder under ``roots`` (sweep directories, output roots or cell folders)."""
    found: dict[Path, CellFolder] = {}
    for root in roots:
        for folder in _walk(Path(root)):
            cell = read_cell_folder(folder)
            if cell is not None:
                found.setdefault(folder.resolve(), cell)
    return sorted(found.values(), key=lambda c: str(c.path))


def format_failures(
    cells: Iterable[CellFolder], *, bullet: str = "  ", examples: int = 3
) -> list[str]:
    """Failed and unfinished cells, one line each; cells that failed with the same error are
    grouped (count, the error once, a few of their folders), so 100 identical failures take
    a few lines."""
    groups: dict[tuple[str, str], list[CellFolder]] = {}
    for cell in cells:
        if cell.status == "failed":
            failure = cell.failure or {}
            key = ("FAILED", f"{failure.get('error', '?')}: {failure.get('message', '')}")
        elif cell.status == "incomplete":
            key = ("NO RESULT", "started, never finished (killed, timed out or still running)")
        elif cell.status == "unreadable":
            key = ("UNREADABLE", f"{RESULTS_FILE} is damaged (not a JSON kfr result)")
        else:
            continue
        groups.setdefault(key, []).append(cell)
    lines = []
    for (status, what), members in groups.items():
        detail = {"FAILED": FAILED_FILE, "UNREADABLE": RESULTS_FILE}.get(status, "")
        if len(members) <= examples:
            lines += [f"{bullet}{status} {c.label}: {what}  [{c.path / detail}]" for c in members]
            continue
        lines.append(f"{bullet}{status} x{len(members)} cells: {what}")
        lines += [f"{bullet}  e.g. {c.label}  [{c.path / detail}]" for c in members[:examples]]
        lines.append(f"{bullet}  ... and {len(members) - examples} more (kfr-report lists all)")
    return lines

"""Cell folders of a sweep: their names, failure records, and what a sweep directory holds.

A cell folder is named by the overrides that make the cell (Hydra's ``override_dirname``, e.g.
``method=rag,retriever.k=3,seed=1``), made safe as one path component. Unlike job numbers, the
name stays the same when the grid grows or shrinks, so a resumed sweep finds each cell's results.

A folder holds ``results.json`` when the cell finished, ``failed.json`` (the error) when it
failed, and only Hydra's ``.hydra/`` when it started and never ended (killed, timed out, or still
running).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kfr.storage import atomic_write_json

RESULTS_FILE = "results.json"  # kfr.cell writes it; named here to keep this module light
FAILED_FILE = "failed.json"
HYDRA_DIR = ".hydra"
# What a sweep job returns to the sweeper when its cell failed: below every accuracy, never NaN
# (Optuna's samplers cannot use NaN, and a failed trial must not look promising).
FAILED_SCORE = -1.0
# A cell folder name longer than this keeps its start and ends with a hash of the whole name.
_MAX_NAME = 180
# Folders inside a cell folder that never hold other cells.
_NOT_CELLS = {"wandb", ".submitit", "finetune", HYDRA_DIR, "report", "logs"}


def job_dirname(override_dirname: str) -> str:
    """``override_dirname`` as one safe path component ("" -> "defaults")."""
    name = override_dirname.replace(os.sep, "∕").replace("\0", "")
    if not name:
        return "defaults"
    if name.startswith("."):  # never hidden, never "." or ".."
        name = "_" + name[1:]
    if len(name.encode()) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = name.encode()[: _MAX_NAME - 13].decode(errors="ignore") + "-" + digest
    return name


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
    from kfr.errors import UserError

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
    status: str  # complete | failed | incomplete
    results: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    overrides: list[str] | None = None

    @property
    def label(self) -> str:
        """The cell's overrides as one line (its folder name when Hydra's record is missing)."""
        if self.overrides is not None:
            return " ".join(self.overrides) or "(no overrides)"
        return self.path.name


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
    from omegaconf import OmegaConf

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


def format_failures(cells: Iterable[CellFolder], *, limit: int = 50) -> list[str]:
    """One line per failed or unfinished cell: its overrides, the error, where to look."""
    lines = []
    for cell in cells:
        if cell.status == "failed":
            failure = cell.failure or {}
            lines.append(
                f"  FAILED  {cell.label}: {failure.get('error', '?')}: "
                f"{failure.get('message', '')}  [{cell.path / FAILED_FILE}]"
            )
        elif cell.status == "incomplete":
            lines.append(f"  NO RESULT  {cell.label}: started, never finished  [{cell.path}]")
    if len(lines) > limit:
        lines = [*lines[:limit], f"  ... and {len(lines) - limit} more"]
    return lines

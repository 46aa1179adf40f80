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


# Override keys a cell ignores unless its method retrieves / fine-tunes (as kfr.config's hash).
_RETRIEVAL_KEYS = ("retriever",)
_TRAINING_KEYS = ("trainer", "finetune", "augment")


def _key(override: str) -> str:
    """The key (or group) an override sets: ``+retriever.k=3`` -> ``retriever.k``."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def _under(key: str, groups: tuple[str, ...]) -> bool:
    return any(key == g or key.startswith(g + ".") or key.startswith(g + "/") for g in groups)


def relevant_overrides(
    overrides: Iterable[str],
    exclude_keys: Iterable[str] = (),
    *,
    retrieve: bool = True,
    finetune: bool = True,
    paraphrases: int = 1,
) -> list[str]:
    """The overrides that can change this cell's results, sorted (Hydra's override_dirname).

    A Cartesian grid makes cells that differ only in settings their method ignores
    (``method=base retriever.k=1`` and ``method=base retriever.k=2``): they get one folder, so
    the cell runs once and the others find its results.
    """
    excluded = set(exclude_keys)
    kept = []
    for override in overrides:
        key = _key(str(override))
        if key in excluded:
            continue
        if not retrieve and _under(key, _RETRIEVAL_KEYS):
            continue
        if not finetune and _under(key, _TRAINING_KEYS):
            continue
        if (
            finetune
            and not paraphrases
            and _under(key, ("augment",))
            and key != "augment.paraphrases"
        ):
            continue  # no paraphrases: where they would come from does not matter
        kept.append(_short_paths(str(override)))
    return sorted(kept)


def _short_paths(override: str) -> str:
    """``data.questions=/data/ce/q.jsonl`` -> ``data.questions=q.jsonl~1a2b3c``: one path
    component, readable, and still different for files of the same name in other folders."""
    key, sep, value = override.partition("=")
    if not sep or "/" not in value:
        return override
    digest = hashlib.sha1(value.encode()).hexdigest()[:6]
    return f"{key}={Path(value.rstrip('/')).name or 'root'}~{digest}"


def job_dirname(
    overrides: Iterable[str] | str,
    exclude_keys: Iterable[str] = (),
    retrieve: bool = True,
    finetune: bool = True,
    paraphrases: int = 1,
) -> str:
    """A cell folder's name: its relevant overrides joined by commas, as one path component.

    ``overrides`` is the job's override list (``hydra.overrides.task``); a string is taken as an
    already joined name. ``""`` -> ``defaults``; long names keep their start plus a hash.
    """
    if isinstance(overrides, str):
        name = overrides
    else:
        name = ",".join(
            relevant_overrides(
                overrides,
                exclude_keys,
                retrieve=retrieve,
                finetune=finetune,
                paraphrases=paraphrases,
            )
        )
    name = name.replace(os.sep, "∕").replace("\0", "")
    if not name:
        return "defaults"
    if name.startswith("."):  # never hidden, never "." or ".."
        name = "_" + name[1:]
    if len(name.encode()) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = name.encode()[: _MAX_NAME - 13].decode(errors="ignore") + "-" + digest
    return name


def distributed_process() -> bool:
    """One of several processes (DDP ranks, tasks of one SLURM job) that run one cell together."""
    if any(os.environ.get(n) for n in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def secondary_process() -> bool:
    """A rank > 0 of a distributed cell: it trains beside rank 0 but logs and scores nothing.

    The rank rules are fine-tuning's (kfr.finetune.checkpoints.secondary_rank), imported only
    when the environment says the process is one of several.
    """
    if not distributed_process():
        return False
    from kfr.finetune.checkpoints import secondary_rank

    return secondary_rank() > 0


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
        else:
            continue
        groups.setdefault(key, []).append(cell)
    lines = []
    for (status, what), members in groups.items():
        detail = FAILED_FILE if status == "FAILED" else ""
        if len(members) <= examples:
            lines += [f"{bullet}{status} {c.label}: {what}  [{c.path / detail}]" for c in members]
            continue
        lines.append(f"{bullet}{status} x{len(members)} cells: {what}")
        lines += [f"{bullet}  e.g. {c.label}  [{c.path / detail}]" for c in members[:examples]]
        lines.append(f"{bullet}  ... and {len(members) - examples} more (kfr-report lists all)")
    return lines

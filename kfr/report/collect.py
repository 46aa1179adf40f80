"""Read the cells of one or more sweep directories into flat records the tables are made of."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kfr.sweeps.jobs import CellFolder, scan_cells

# Config keys that place a cell in a table (row, column, seed) rather than make it a variant.
_PLACED = (("experiment_name",), ("seed",), ("eval", "shots"), ("retriever", "k"))


@dataclass
class CellResult:
    """One finished cell, as the report sees it."""

    path: Path
    model: str
    data: str  # the data config's name (mmlu_anatomy, novel_facts, custom, ...)
    task: str  # what the report's rows call it: an MMLU subject, custom:<file stem>, ...
    shots: int
    style: str
    method: str
    seed: int
    k: int | None  # chunks retrieved (methods that retrieve)
    paraphrases: int | None  # paraphrases per document (methods that fine-tune)
    acc: float
    acc_ci95: tuple[float, float] | None
    acc_norm: float | None
    n: int
    recall_at_k: float | None
    card: str | None
    card_digest: str | None
    variant: str  # digest of every other setting: cells agreeing on it are seeds of each other
    settings: dict[str, Any] = field(default_factory=dict)  # a few knobs worth showing


def _task(config: dict[str, Any], data_name: str) -> str:
    data = config.get("data") or {}
    if data_name.startswith("mmlu_"):
        return data_name.removeprefix("mmlu_")
    hf_name = data.get("hf_name")
    if data_name == "mmlu" and hf_name and "," not in str(hf_name):
        return str(hf_name)
    if data_name == "custom" and data.get("questions"):
        return f"custom:{Path(str(data['questions'])).stem}"
    return data_name


def _variant(config: dict[str, Any]) -> str:
    """Hash of the settings that are not the cell's table position (nor where it was run)."""
    from kfr.config import config_hash

    trimmed = json.loads(json.dumps(config))
    for path in _PLACED:
        node = trimmed
        for key in path[:-1]:
            node = node.get(key) or {}
        if path[-1] in node:
            node[path[-1]] = None
    augment = trimmed.get("augment")
    if isinstance(augment, dict) and augment.get("paraphrases"):
        augment["paraphrases"] = -1  # any count > 0: where the paraphrases come from still counts
    try:
        return config_hash(OmegaConf.create(trimmed))
    except Exception:  # results written by another version of kfr: hash what is there
        blob = json.dumps(trimmed, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _card_digest(card: str | None) -> str | None:
    if not card:
        return None
    try:
        return hashlib.sha256(Path(card).read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def cell_result(folder: CellFolder) -> CellResult | None:
    """The report's record of a finished cell (None if its results.json lacks what is needed)."""
    results = folder.results or {}
    try:
        cell, metrics = results["cell"], results["metrics"]
        config = results.get("config") or {}
        method_cfg = config.get("method") or {}
        retrieve = bool(method_cfg.get("retrieve", cell["method"] in ("rag", "ft_rag")))
        finetune = bool(method_cfg.get("finetune", cell["method"] in ("ft", "ft_rag")))
        k = (results.get("retrieval") or {}).get("k", (config.get("retriever") or {}).get("k"))
        paraphrases = (config.get("augment") or {}).get("paraphrases", 0)
        ci = metrics.get("acc_ci95")
        card = (results.get("data") or {}).get("card")
        finetune_cfg = config.get("finetune") or {}
        settings = {"lr": finetune_cfg.get("lr"), "epochs": finetune_cfg.get("epochs")}
        return CellResult(
            path=folder.path,
            model=str(cell["model"]),
            data=str(cell["data"]),
            task=_task(config, str(cell["data"])),
            shots=int(cell.get("shots", 0)),
            style=str(cell.get("style", "")),
            method=str(cell["method"]),
            seed=int(cell.get("seed", 0)),
            k=int(k) if retrieve and k is not None else None,
            paraphrases=int(paraphrases) if finetune else None,
            acc=float(metrics["acc"]),
            acc_ci95=(float(ci[0]), float(ci[1])) if ci else None,
            acc_norm=metrics.get("acc_norm"),
            n=int(metrics.get("n", 0)),
            recall_at_k=metrics.get("recall_at_k"),
            card=card,
            card_digest=_card_digest(card),
            variant=_variant(config) if config else "?",
            settings=settings if finetune else {},
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Attempt:
    """Where a failed or unfinished cell would sit in the tables (from its .hydra/config.yaml)."""

    folder: CellFolder
    model: str
    task: str
    shots: int
    method: str
    paraphrases: int | None

    @property
    def status(self) -> str:
        return "FAILED" if self.folder.status == "failed" else "NO RESULT"


def attempt(folder: CellFolder) -> Attempt | None:
    path = folder.path / ".hydra" / "config.yaml"
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        assert isinstance(config, dict)
        method = config["method"]
        data_name = str(config["data"]["name"])
        return Attempt(
            folder=folder,
            model=str(config["model"]["name"]),
            task=_task(config, data_name),
            shots=int(config["eval"]["shots"]),
            method=str(method["name"]),
            paraphrases=int(config["augment"]["paraphrases"]) if method["finetune"] else None,
        )
    except Exception:  # no or half-written Hydra record: listed by folder only
        return None


@dataclass
class Collected:
    roots: list[Path]
    cells: list[CellResult]
    failed: list[CellFolder]  # failed.json
    incomplete: list[CellFolder]  # started, no result (killed, timed out, running)
    unreadable: list[CellFolder]  # results.json that is not a kfr result
    attempts: list[Attempt] = field(default_factory=list)  # failed + incomplete, placed


def collect(roots: Iterable[str | Path]) -> Collected:
    roots = [Path(r) for r in roots]
    folders = scan_cells(roots)
    cells, unreadable = [], []
    for folder in folders:
        if folder.status != "complete":
            continue
        record = cell_result(folder)
        if record is None:
            unreadable.append(folder)
        else:
            cells.append(record)
    unfinished = [f for f in folders if f.status != "complete"]
    return Collected(
        roots=roots,
        cells=cells,
        failed=[f for f in unfinished if f.status == "failed"],
        incomplete=[f for f in unfinished if f.status == "incomplete"],
        unreadable=unreadable,
        attempts=[a for f in unfinished if (a := attempt(f)) is not None],
    )

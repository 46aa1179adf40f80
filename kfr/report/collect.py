"""Read the cells of one or more sweep directories into flat records the tables are made of.

A cell's per-question records (``predictions.jsonl``: direct questions, then probe questions
with their ``family``; ``control.jsonl``: the control set of a fine-tuned cell) are read only when
a table asks for an interval of that cell (:meth:`CellResult.question_values`), once per cell.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kfr.cell.folder import CONTROL_FILE, PREDICTIONS_FILE, CellFolder, scan_cells
from kfr.cell.results import CellResults
from kfr.core.identity import variant_key


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
    retrieve: bool = False  # answered with retrieved chunks in the prompt
    augment_source: str | None = None  # where augmentation texts came from (paraphrases > 0)
    forgetting: float | None = None  # base accuracy on the control set minus this cell's
    forgetting_ci95: tuple[float, float] | None = None
    per_category: dict[str, dict[str, Any]] = field(default_factory=dict)  # SliCK category
    train_tokens: int | None = None  # tokens fine-tuning processed (all epochs)
    train_wall_s: float | None = None
    # Probe family -> its metrics (acc, acc_ci95, n, chance, recall); empty for older results.
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # data.novel_facts.seed: which knowledge base (question set); None for other data.
    kb_seed: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)  # results.json's, all
    replay_samples: list[str] = field(default_factory=list, repr=False)  # a few replay texts
    _read: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def summary(self, name: str, family: str | None = None) -> tuple[float, Any] | None:
        """The cell's own value of a metric and its interval, from results.json (``name`` in
        its metrics, or in a probe family's): None when the cell did not compute it."""
        source = self.metrics if family is None else self.probes.get(family) or {}
        value = source.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        return float(value), _pair(source.get(f"{name}_ci95"))

    def question_values(self, name: str, family: str | None = None) -> dict[str, float] | None:
        """Question id -> this cell's value of ``name`` on it (NaN: the question does not
        count), from its per-question records; None when it has none for this metric.

        ``acc``, ``acc_pmi`` (``correct``, ``correct_pmi``) and any diagnostic name of a
        record's ``diagnostics`` on the direct questions (``family`` None) or a probe family's;
        on the control set (``control.jsonl``): ``forgetting`` (base_correct - correct),
        ``control_logp_change`` (logp - base_logp) and ``control_kl`` (kl)."""
        key = ("values", name, family)
        if key not in self._read:
            self._read[key] = _values(self, name, family)
        return self._read[key]

    def diagnostic_names(self, family: str) -> list[str]:
        """The diagnostics of a probe family this cell has: in results.json (``d``, ``d_ci95``,
        ``d_n``) or in its records' ``diagnostics``."""
        metrics = self.probes.get(family) or {}
        names = {k for k in metrics if f"{k}_ci95" in metrics and f"{k}_n" in metrics}
        for record in self._records(PREDICTIONS_FILE).get(family, []):
            names.update((record.get("diagnostics") or {}).keys())
        return sorted(str(n) for n in names)

    def _records(self, file: str) -> dict[str | None, list[dict[str, Any]]]:
        """The records of one of the cell's JSONL files by family (control: all under None);
        empty when the file is absent or damaged."""
        key = ("file", file)
        if key not in self._read:
            self._read[key] = _read_records(self.path / file)
        return self._read[key]


_CONTROL = {
    "forgetting": lambda r: float(r["base_correct"]) - float(r["correct"]),
    "control_logp_change": lambda r: float(r["logp"]) - float(r["base_logp"]),
    "control_kl": lambda r: _number(r["kl"]),  # null: scored without KL (top_k = 0)
}


def _read_records(path: Path) -> dict[str | None, list[dict[str, Any]]]:
    by_family: dict[str | None, list[dict[str, Any]]] = {}
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for record in json.loads("[" + ",".join(lines) + "]"):  # one parse: several times faster
            by_family.setdefault(record.get("family"), []).append(record)
    except (OSError, ValueError, AttributeError):  # absent, damaged: the cell's own intervals
        return {}
    return by_family


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _values(cell: CellResult, name: str, family: str | None) -> dict[str, float] | None:
    try:
        if name in _CONTROL:
            if family is not None:
                return None
            records = cell._records(CONTROL_FILE).get(None, [])
            values = {str(r["id"]): _CONTROL[name](r) for r in records}
        else:
            records = cell._records(PREDICTIONS_FILE).get(family, [])
            if name in ("acc", "acc_pmi"):
                field_name = "correct" if name == "acc" else "correct_pmi"
                if not records or any(field_name not in r for r in records):
                    return None
                values = {str(r["id"]): _number(r[field_name]) for r in records}
            else:
                found = [r.get("diagnostics") or {} for r in records]
                if not any(name in d for d in found):
                    return None
                values = {
                    str(r["id"]): _number(d.get(name)) for r, d in zip(records, found, strict=True)
                }
    except (KeyError, TypeError, ValueError):  # records of another kfr version
        return None
    if all(math.isnan(v) for v in values.values()):  # nothing counts: as if never computed
        return None
    return values


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


def _card_digest(card: str | None) -> str | None:
    if not card:
        return None
    try:
        return hashlib.sha256(Path(card).read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def cell_result(folder: CellFolder) -> CellResult | None:
    """The report's record of a finished cell (None if its results.json lacks what is needed)."""
    try:
        results = CellResults.from_json(folder.results or {})
        cell, metrics, config = results.cell, results.metrics, results.config
        method_cfg = config.get("method") or {}
        retrieve = bool(method_cfg.get("retrieve", cell.method in ("rag", "ft_rag")))
        finetune = bool(method_cfg.get("finetune", cell.method in ("ft", "ft_rag")))
        k = (results.retrieval or {}).get("k", (config.get("retriever") or {}).get("k"))
        paraphrases = (config.get("augment") or {}).get("paraphrases", 0)
        ci = metrics.get("acc_ci95")
        card = results.data.get("card")
        finetune_cfg = config.get("finetune") or {}
        settings = {
            "lr": _lr(finetune_cfg),  # the rate trained at: finetune.lr x finetune.lr_scale
            "epochs": finetune_cfg.get("epochs"),
            "mode": finetune_cfg.get("mode"),
            "replay_ratio": finetune_cfg.get("replay_ratio"),
            "replay_share": finetune_cfg.get("replay_share"),
        }
        return CellResult(
            path=folder.path,
            model=cell.model,
            data=cell.data,
            task=_task(config, cell.data),
            shots=cell.shots,
            style=cell.style,
            method=cell.method,
            seed=cell.seed,
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
            settings=_settings(settings if finetune else {}, config, retrieve),
            retrieve=retrieve,
            augment_source=_augment_source(config) if finetune and paraphrases else None,
            forgetting=metrics.get("forgetting"),
            forgetting_ci95=_pair(metrics.get("forgetting_ci95")),
            per_category=dict(metrics.get("per_category") or {}),
            train_tokens=(results.finetune or {}).get("tokens"),
            train_wall_s=(results.finetune or {}).get("wall_s"),
            probes={str(f): dict(m) for f, m in (metrics.get("probes") or {}).items()},
            kb_seed=_kb_seed(config),
            metrics=dict(metrics),
            replay_samples=_replay_samples(results.finetune),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _kb_seed(config: dict[str, Any]) -> int | None:
    data = config.get("data") or {}
    novel_facts = data.get("novel_facts")
    if not isinstance(novel_facts, dict) or not str(data.get("name")).startswith("novel_facts"):
        return None
    seed = novel_facts.get("seed")
    return None if seed is None else int(seed)


def _replay_samples(finetune: dict[str, Any] | None) -> list[str]:
    replay = (finetune or {}).get("replay")
    samples = replay.get("samples") if isinstance(replay, dict) else None
    if not isinstance(samples, list):
        return []
    texts = [s.get("text", json.dumps(s)) if isinstance(s, dict) else s for s in samples[:3]]
    return [str(t) for t in texts]


def _lr(finetune: dict[str, Any]) -> float | None:
    lr = finetune.get("lr")
    return None if lr is None else float(lr) * float(finetune.get("lr_scale", 1.0))


def _settings(settings: dict[str, Any], config: dict[str, Any], retrieve: bool) -> dict:
    """The knobs worth showing, plus ``hops`` for cells that retrieve in two hops."""
    hops = (config.get("retriever") or {}).get("hops", 1) if retrieve else 1
    return {**settings, "hops": int(hops)} if hops and int(hops) > 1 else settings


def _augment_source(config: dict[str, Any]) -> str | None:
    source = (config.get("augment") or {}).get("source")
    return None if source is None else str(source)


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        low, high = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return None if math.isnan(low) or math.isnan(high) else (low, high)


def _variant(config: dict[str, Any]) -> str:
    """Cells agreeing on it are seeds of each other (kfr.core.identity.variant_key)."""
    try:
        return variant_key(config)
    except Exception:  # results written by another version of kfr: hash what is there
        blob = json.dumps(config, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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
    unreadable: list[CellFolder]  # results.json that is damaged or not a kfr result
    attempts: list[Attempt] = field(default_factory=list)  # failed + incomplete, placed


def collect(roots: Iterable[str | Path]) -> Collected:
    roots = [Path(r) for r in roots]
    folders = scan_cells(roots)
    cells, unreadable = [], []
    for folder in folders:
        if folder.status == "unreadable":  # results.json there, but damaged (not JSON)
            unreadable.append(folder)
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

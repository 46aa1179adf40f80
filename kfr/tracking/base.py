"""What every logger records about a cell: its name, tags and flat metrics; the Tracker protocol."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from kfr.cell.results import CellResults
from kfr.core.schema import KfrConfig


class Tracker(Protocol):
    """The logger of one cell's run. Fine-tuning writes its curves through
    :meth:`training_loggers` (Lightning loggers on this very run); the cell's results go
    through :meth:`log_results`."""

    def training_loggers(self) -> list[Any]: ...

    def log_results(self, results: CellResults) -> None: ...

    def close(self, error: BaseException | None) -> None: ...


class NullTracker:
    def training_loggers(self) -> list[Any]:
        return []

    def log_results(self, results: CellResults) -> None:
        pass

    def close(self, error: BaseException | None) -> None:
        pass


def data_label(cfg: KfrConfig) -> str:
    """The data set's name; for data=custom, the questions file's name (``custom:<stem>``)."""
    name = str(cfg.data.name)
    questions = cfg.data.questions
    if name == "custom" and questions:
        return f"custom:{Path(str(questions)).stem}"
    return name


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def run_name(cfg: KfrConfig) -> str:
    """A readable name, e.g. ``smollm2_135m-novel_facts-ft_rag-k3-p4-0shot-s1``."""
    parts = [str(cfg.model.name), data_label(cfg), str(cfg.method.name)]
    if cfg.method.retrieve:
        parts.append(f"k{cfg.retriever.k}")
    if cfg.method.finetune:
        parts.append(f"p{cfg.augment.paraphrases}")
    parts.append(f"{cfg.eval.shots}shot")
    if _enum_value(cfg.eval.style) != "cloze":
        parts.append(_enum_value(cfg.eval.style))
    parts.append(f"s{cfg.seed}")
    return "-".join(parts)


def run_tags(cfg: KfrConfig) -> list[str]:
    return [str(cfg.method.name), str(cfg.model.name), str(cfg.data.name)]


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if isinstance(value, float) and math.isnan(value) else value


def _flat_numbers(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The numbers of one metrics block; a two-element list is an interval (_low, _high)."""
    flat: dict[str, float | int] = {}
    for key, value in metrics.items():
        if isinstance(value, list | tuple) and len(value) == 2:
            for suffix, bound in zip(("low", "high"), value, strict=True):
                if (number := _number(bound)) is not None:
                    flat[f"{key}_{suffix}"] = number
        elif (number := _number(value)) is not None:
            flat[key] = number
    return flat


def flat_metrics(results: dict[str, Any]) -> dict[str, float | int]:
    """results.json's metrics as flat numbers: acc, acc_ci95_low, ..., subject/<name>/acc,
    probes/<family>/acc (and the family's interval, acc_norm, n, chance, recall)."""
    flat = _flat_numbers(results["metrics"])
    for family, metrics in (results["metrics"].get("probes") or {}).items():
        flat |= {f"probes/{family}/{k}": v for k, v in _flat_numbers(metrics).items()}
    subjects = results["metrics"].get("per_subject") or {}
    if len(subjects) > 1:
        for subject, metrics in subjects.items():
            for key in ("acc", "acc_norm", "n"):
                if (number := _number(metrics.get(key))) is not None:
                    flat[f"subject/{subject}/{key}"] = number
    for key, value in (results.get("timings") or {}).items():
        if (number := _number(value)) is not None:
            flat[f"timings/{key}"] = number
    for key, value in (results.get("finetune") or {}).items():
        if (number := _number(value)) is not None:
            flat[f"finetune/{key}"] = number
    return flat

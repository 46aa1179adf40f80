"""What a cell produces, typed: :class:`CellResults` is results.json, in memory.

The cell builds it, the tracker logs it, the sweep prints it and the report reads it back from
disk with :meth:`CellResults.from_json`; the file's layout is :meth:`CellResults.to_json`'s.
The per-question predictions travel with it in memory (``predictions``, what predictions.jsonl
holds), so a tracker never re-reads a file the cell has just written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Cell:
    """Where a cell sits in the study: what its row and column in a table are made of."""

    experiment: str
    model: str
    data: str
    method: str
    style: str
    shots: int
    seed: int


@dataclass
class CellResults:
    cell: Cell
    metrics: dict[str, Any]  # acc, acc_norm, their 95% intervals, n, chance, per_subject, ...
    scoring: dict[str, Any]  # batch size, max length, truncation, tokens, device, checkpoint
    data: dict[str, Any]  # questions / knowledge sources, dataset card, origin
    timings: dict[str, float]
    versions: dict[str, str]
    config_hash: str
    config: dict[str, Any]  # the resolved config the cell ran
    command: list[str]
    retrieval: dict[str, Any] | None = None  # methods that retrieve
    finetune: dict[str, Any] | None = None  # methods that fine-tune: the training summary
    # The control set behind forgetting and the SliCK category counts, when computed.
    analysis: dict[str, Any] | None = None
    # Not in results.json: the per-question records (predictions.jsonl), when at hand.
    predictions: list[dict[str, Any]] | None = field(default=None, compare=False, repr=False)
    # Keys a newer or older kfr wrote that this one does not know: kept, so nothing is lost.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """results.json's content (key order as written since the first kfr release)."""
        out: dict[str, Any] = {"cell": dict(vars(self.cell))}
        for f in fields(self):
            if f.name in ("cell", "predictions", "extra"):
                continue
            value = getattr(self, f.name)
            if f.name in ("retrieval", "finetune", "analysis") and value is None:
                continue
            out[f.name] = value
        return out | self.extra

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResults:
        """Results read back from disk; KeyError / TypeError when ``data`` is not a kfr
        result."""
        known = {f.name for f in fields(cls)} - {"predictions", "extra"}
        cell = data["cell"]
        return cls(
            cell=Cell(
                experiment=str(cell.get("experiment", "")),
                model=str(cell["model"]),
                data=str(cell["data"]),
                method=str(cell["method"]),
                style=str(cell.get("style", "")),
                shots=int(cell.get("shots", 0)),
                seed=int(cell.get("seed", 0)),
            ),
            metrics=dict(data["metrics"]),
            scoring=dict(data.get("scoring") or {}),
            data=dict(data.get("data") or {}),
            timings=dict(data.get("timings") or {}),
            versions=dict(data.get("versions") or {}),
            config_hash=str(data.get("config_hash", "")),
            config=dict(data.get("config") or {}),
            command=list(data.get("command") or []),
            retrieval=data.get("retrieval"),
            finetune=data.get("finetune"),
            analysis=data.get("analysis"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def read(cls, path: str | Path) -> CellResults | None:
        """The results in ``path``, or None when it is missing, unreadable or not kfr's."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_json(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def summary(self) -> str:
        """A few lines for the console: the cell, acc and acc_norm with intervals, recall, then
        one line per probe family."""
        m, cell = self.metrics, self.cell
        lines = [
            f"{cell.model} | {cell.data} | method={cell.method} | "
            f"{cell.style} {cell.shots}-shot | n={m['n']}",
            f"  acc      {m['acc']:.3f}  95% CI [{m['acc_ci95'][0]:.3f}, {m['acc_ci95'][1]:.3f}]"
            f"  (chance {m['chance']:.3f})",
            f"  acc_norm {m['acc_norm']:.3f}  95% CI [{m['acc_norm_ci95'][0]:.3f}, "
            f"{m['acc_norm_ci95'][1]:.3f}]",
        ]
        if m.get("acc_pmi") is not None:
            lines.append(f"  acc_pmi  {m['acc_pmi']:.3f}  {_ci(m.get('acc_pmi_ci95'))}")
        if m.get("recall_at_k") is not None:
            k = (self.retrieval or {}).get("k")
            recall = f"  recall@{k} {m['recall_at_k']:.3f}"
            lines.append(recall + (f"  recall@1 {m['recall_at_1']:.3f}" if k and k > 1 else ""))
        if m.get("forgetting") is not None:
            low, high = m["forgetting_ci95"]
            lines.append(
                f"  forgetting {m['forgetting']:+.3f}  95% CI [{low:+.3f}, {high:+.3f}]  "
                f"(control set: base {m['control_base_acc']:.3f}, now {m['control_acc']:.3f}, "
                f"n={m['control_n']})"
            )
            for key, label in (("control_logp_change", "Δlog P"), ("control_kl", "KL")):
                if m.get(key) is not None:
                    lines.append(
                        f"  control {label} {m[key]:+.4f}  {_ci(m.get(key + '_ci95'), '+.4f')}"
                    )
        if m.get("per_category"):
            known = [
                f"{name} {c['acc']:.3f} (n={c['n']})"
                for name, c in m["per_category"].items()
                if c.get("n")
            ]
            lines.append("  by SliCK category: " + ", ".join(known))
        if len(m.get("per_subject") or {}) > 1:
            width = max(len(s) for s in m["per_subject"])
            for subject, sm in m["per_subject"].items():
                lines.append(f"    {subject:<{width}}  acc {sm['acc']:.3f}  n={sm['n']}")
        return "\n".join(lines + self._probe_lines())

    def _probe_lines(self) -> list[str]:
        """One line per probe family: acc with its interval, chance, recall@K."""
        families = self.metrics.get("probes") or {}
        width = max((len(f) for f in families), default=0)
        k = (self.retrieval or {}).get("k")
        lines = []
        for family, fm in families.items():
            low, high = fm["acc_ci95"]
            line = (
                f"  probe {family:<{width}}  acc {fm['acc']:.3f}  95% CI [{low:.3f}, {high:.3f}]"
                f"  (chance {fm['chance']:.3f})  n={fm['n']}"
            )
            if fm.get("recall_at_k") is not None:
                line += f"  recall@{k} {fm['recall_at_k']:.3f}"
            if fm.get("acc_pmi") is not None:
                line += f"  acc_pmi {fm['acc_pmi']:.3f}"
            lines.append(line)
            for name in sorted(n for n in fm if f"{n}_ci95" in fm and f"{n}_n" in fm):
                if fm[name] is not None:
                    interval = _ci(fm[name + "_ci95"])
                    lines.append(f"      {name} {fm[name]:.3f}  {interval}  n={fm[name + '_n']}")
        return lines


def _ci(pair, spec: str = ".3f") -> str:
    if not pair:
        return ""
    return f"95% CI [{pair[0]:{spec}}, {pair[1]:{spec}}]"

"""Cells aggregated over seeds, and the choice of the aggregate shown at a table position.

Cells that agree on everything but the seed (model, task, shots, method, K, paraphrases and the
digest of every other setting) form one :class:`Aggregate`: the mean accuracy over its seeds and
a 95% interval (Student t over seeds, :mod:`kfr.report.stats`; with one seed, the cell's bootstrap
interval over questions). :func:`pick` chooses among the aggregates that could fill one position
of a table (e.g. the best K of a RAG column).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kfr.report.collect import CellResult
from kfr.report.stats import mean_ci95


@dataclass
class Aggregate:
    """The cells of one setting that differ only by seed."""

    model: str
    task: str
    shots: int
    method: str
    k: int | None
    paraphrases: int | None
    variant: str
    cells: list[CellResult] = field(default_factory=list)

    @property
    def seeds(self) -> int:
        return len(self.cells)

    @property
    def mean(self) -> float:
        return sum(c.acc for c in self.cells) / len(self.cells)

    @property
    def ci95(self) -> tuple[float, float] | None:
        if len(self.cells) == 1:
            return self.cells[0].acc_ci95
        return mean_ci95([c.acc for c in self.cells])

    def probe(self, family: str) -> tuple[float, tuple[float, float] | None] | None:
        """Mean accuracy on a probe family over the seeds that scored it and its 95% interval
        (as :attr:`ci95`: Student t over seeds; one seed, the bootstrap over questions)."""
        scored = [c.probes[family] for c in self.cells if family in c.probes]
        if not scored:
            return None
        accs = [float(m["acc"]) for m in scored]
        if len(accs) == 1:
            ci = scored[0].get("acc_ci95")
            return accs[0], (float(ci[0]), float(ci[1])) if ci else None
        return sum(accs) / len(accs), mean_ci95(accs)

    @property
    def ci_over(self) -> str:
        return "seeds" if len(self.cells) > 1 else "questions"

    @property
    def cards(self) -> set[str]:
        return {c.card_digest or "none" for c in self.cells}

    @property
    def augment_source(self) -> str | None:
        return self.cells[0].augment_source

    @property
    def paraphrase_arm(self) -> bool:
        """Fine-tuning on documents and paraphrases, as the paper's FT-reg / FT-par columns
        mean (entity-graph texts are their own arm)."""
        return self.augment_source != "entigraph"


def aggregate(cells: Iterable[CellResult]) -> list[Aggregate]:
    """Group cells by setting; one cell per seed (the first found, by folder name)."""
    groups: dict[tuple, Aggregate] = {}
    for cell in sorted(cells, key=lambda c: str(c.path)):
        key = (
            cell.model,
            cell.task,
            cell.shots,
            cell.method,
            cell.k,
            cell.paraphrases,
            cell.variant,
        )
        agg = groups.setdefault(key, Aggregate(*key))
        if all(c.seed != cell.seed for c in agg.cells):
            agg.cells.append(cell)
    return list(groups.values())


@dataclass
class Picked:
    """The aggregate shown at one table position, and among how many it was the best."""

    agg: Aggregate
    candidates: int


Selector = Callable[[Sequence[Aggregate]], list[Aggregate]]


def pick(aggs: Sequence[Aggregate], method: str, select: Selector | None = None) -> Picked | None:
    """The best (highest mean) aggregate of ``method`` after ``select``; RAG: the best K."""
    candidates = [a for a in aggs if a.method == method]
    if select is not None:
        candidates = select(candidates)
    if not candidates:
        return None
    best = max(candidates, key=lambda a: (a.mean, a.seeds))
    return Picked(best, len(candidates))

"""Cells aggregated over seeds, and the choice of the aggregate shown at a table position.

Cells that agree on everything but their seeds (model, task, shots, method, K, paraphrases and
the digest of every other setting; the training seed and the knowledge base's seed both vary
within) form one :class:`Aggregate`: the mean over its cells of each number and its 95% interval
(:func:`Aggregate.estimate`: the two-level bootstrap over knowledge bases, seeds and questions of
:mod:`kfr.report.intervals`; older cells without per-question records: Student t over seeds, or
the cell's own bootstrap with one seed). :func:`pick` chooses among the aggregates that could
fill one position of a table (e.g. the best K of a RAG column).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kfr.report.collect import CellResult
from kfr.report.intervals import Estimate, estimate


@dataclass
class Aggregate:
    """The cells of one setting that differ only by seeds (training, knowledge base)."""

    model: str
    task: str
    shots: int
    method: str
    k: int | None
    paraphrases: int | None
    variant: str
    cells: list[CellResult] = field(default_factory=list)
    _estimates: dict[tuple, Estimate | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def seeds(self) -> int:
        """Cells: training seeds x knowledge bases where both varied."""
        return len(self.cells)

    @property
    def train_seeds(self) -> int:
        return len({c.seed for c in self.cells})

    @property
    def kb_seeds(self) -> int:
        return len({c.kb_seed for c in self.cells})

    @property
    def seeds_label(self) -> str:
        """``3`` (training seeds), or ``3x2`` (training seeds x knowledge bases) for data whose
        knowledge base has a seed (novel_facts)."""
        if all(c.kb_seed is None for c in self.cells):
            return str(self.train_seeds)
        return f"{self.train_seeds}x{self.kb_seeds}"

    @property
    def mean(self) -> float:
        return sum(c.acc for c in self.cells) / len(self.cells)

    def estimate(self, name: str = "acc", family: str | None = None) -> Estimate | None:
        """``name`` on the direct questions (``family`` None; the control set for forgetting,
        control_logp_change, control_kl) or a probe family's, over the cells that computed it,
        with its 95% interval (computed once)."""
        key = (name, family)
        if key not in self._estimates:
            self._estimates[key] = estimate(self.cells, name, family)
        return self._estimates[key]

    @property
    def ci95(self) -> tuple[float, float] | None:
        est = self.estimate()
        return None if est is None else est.ci

    def probe(self, family: str) -> tuple[float, tuple[float, float] | None] | None:
        """Mean accuracy on a probe family over the seeds that scored it and its 95% interval
        (as :attr:`ci95`)."""
        est = self.estimate("acc", family)
        return None if est is None else (est.mean, est.ci)

    @property
    def ci_over(self) -> str:
        """What the accuracy's interval is over: bootstrap (two-level, per-question records),
        exact (binomial at 0 or 1), seeds (Student t) or questions (one older cell)."""
        est = self.estimate()
        return "questions" if est is None else est.over

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
    """Group cells by setting; one cell per training seed and knowledge base (the first found,
    by folder name)."""
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
        if all((c.seed, c.kb_seed) != (cell.seed, cell.kb_seed) for c in agg.cells):
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

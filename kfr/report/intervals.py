"""Every interval the report shows, and how it is written.

:func:`estimate` is one number of a setting (accuracy, a probe family's accuracy or PMI accuracy,
a diagnostic, forgetting, the control set's log P change or KL) over its cells with its 95%
interval: the two-level bootstrap of :mod:`kfr.report.stats` over the cells' per-question records
(knowledge bases, training seeds, questions); where every value is 0 or every value is 1, the
exact binomial (Clopper-Pearson) interval of the distinct questions behind it (training seeds
re-ask the same questions, so they add none). Cells without per-question records (written by an
older kfr) fall back to the cell's own interval (one cell) or the Student t interval over the
cells' values. :func:`difference` is the paired interval of one arm minus another: the same
question resamples for both, the same seed resamples where they ran the same seeds.

:func:`interval_text` writes ``mean±half-width`` where the interval is about symmetric and
``mean [low, high]`` where one side is more than 1.5 times the other (at 0 or 1, e.g.
``1.000 [0.985, 1.000]``; older cells' own intervals: always the half-width, as before);
:func:`coverage_note` is the line under a table saying what its intervals cover.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kfr.evaluation.metrics import exact_binomial_interval
from kfr.report.collect import CellResult
from kfr.report.stats import mean_ci95, percentile_interval, two_level

# Control-set metrics (control.jsonl); the last two are not proportions.
CONTROL_METRICS = ("forgetting", "control_logp_change", "control_kl")
_CONTINUOUS = ("control_logp_change", "control_kl")
BOOTSTRAP, EXACT, OVER_SEEDS, OVER_QUESTIONS = "bootstrap", "exact", "seeds", "questions"


@dataclass(frozen=True)
class Estimate:
    """A setting's number over its cells and its 95% interval (None: none known)."""

    mean: float
    ci: tuple[float, float] | None
    over: str  # bootstrap | exact | seeds (Student t, older cells) | questions (one older cell)
    train_seeds: int
    kb_seeds: int

    @property
    def fallback(self) -> bool:
        """From cells without per-question records: the older intervals."""
        return self.over in (OVER_SEEDS, OVER_QUESTIONS)


def _seeds(cells: Sequence[CellResult]) -> tuple[int, int]:
    return len({c.seed for c in cells}), len({c.kb_seed for c in cells})


def _blocks(
    cells: Sequence[CellResult], values: dict[int, dict[str, float]]
) -> dict[int | None, tuple[list[CellResult], list[str]]]:
    """Knowledge base -> its cells (by training seed) and the union of their question ids."""
    blocks: dict[int | None, tuple[list[CellResult], list[str]]] = {}
    for cell in sorted(cells, key=lambda c: (c.kb_seed is not None, c.kb_seed or 0, c.seed)):
        members, _ = blocks.setdefault(cell.kb_seed, ([], []))
        members.append(cell)
    for kb, (members, _) in blocks.items():
        ids = sorted({q for c in members for q in values[id(c)]})
        blocks[kb] = (members, ids)
    return blocks


def _matrix(members: Sequence[CellResult], ids: Sequence[str], values: dict) -> np.ndarray:
    return np.array([[values[id(c)].get(q, np.nan) for q in ids] for c in members], dtype=float)


def _exact(name: str, matrices: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The exact binomial interval where every value is 0 or every one is 1 (forgetting: all
    -1, 0 or 1, each side bounded so); None where the values vary or are not proportions."""
    if name in _CONTINUOUS:
        return None
    finite = [m[np.isfinite(m)] for m in matrices]
    pooled = np.concatenate(finite) if finite else np.array([])
    if not len(pooled) or pooled.min() != pooled.max() or pooled[0] not in (-1.0, 0.0, 1.0):
        return None
    # Distinct questions: the columns of each knowledge base with any value.
    n = sum(int(np.isfinite(m).any(axis=0).sum()) for m in matrices)
    value = float(pooled[0])
    if value == 1.0:
        low, high = exact_binomial_interval(n, n)
        return low, high
    if value == -1.0:  # forgetting: every control question gained
        low, _ = exact_binomial_interval(n, n)
        return -1.0, -low
    _, high = exact_binomial_interval(0, n)
    return (-high, high) if name == "forgetting" else (0.0, high)


def estimate(cells: Sequence[CellResult], name: str = "acc", family: str | None = None):
    """``name`` (on ``family``'s questions, or the direct ones / the control set) over the cells
    that computed it, and its interval; None when none did."""
    summaries = {id(c): c.summary(name, family) for c in cells}
    values = {id(c): c.question_values(name, family) for c in cells}
    scored = [c for c in cells if summaries[id(c)] is not None or values[id(c)]]
    if not scored:
        return None
    per_cell = []
    for cell in scored:
        summary = summaries[id(cell)]
        if summary is not None:
            per_cell.append(summary[0])
        else:
            per_cell.append(float(np.nanmean(list(values[id(cell)].values()))))
    mean = float(np.mean(per_cell))
    train, kbs = _seeds(scored)
    if all(values[id(c)] for c in scored):
        blocks = _blocks(scored, values)
        matrices = [_matrix(members, ids, values) for members, ids in blocks.values()]
        exact = _exact(name, matrices)
        if exact is not None:
            return Estimate(mean, exact, EXACT, train, kbs)
        resampled = two_level([[m] for m in matrices])[:, 0]
        return Estimate(mean, percentile_interval(resampled), BOOTSTRAP, train, kbs)
    if len(scored) == 1:
        summary = summaries[id(scored[0])]
        return Estimate(mean, summary[1] if summary else None, OVER_QUESTIONS, train, kbs)
    return Estimate(mean, mean_ci95(per_cell), OVER_SEEDS, train, kbs)


def difference(
    cells_a: Sequence[CellResult],
    cells_b: Sequence[CellResult],
    name: str = "acc",
    family: str | None = None,
    *,
    paired: bool = True,
) -> tuple[float, tuple[float, float]] | None:
    """Arm a minus arm b on ``name``, with its bootstrap interval over the knowledge bases both
    ran and the questions both answered: the same question resamples for both arms, the same
    seed resamples where both ran the same training seeds (``paired=False``: each arm draws its
    own, what the arms' own intervals would combine to). None without per-question records."""
    values = {id(c): c.question_values(name, family) for c in [*cells_a, *cells_b]}
    a = [c for c in cells_a if values[id(c)]]
    b = [c for c in cells_b if values[id(c)]]
    if not a or not b:
        return None
    blocks_a, blocks_b = _blocks(a, values), _blocks(b, values)
    blocks, same_cells, means = [], [], ([], [])
    for kb in sorted(blocks_a.keys() & blocks_b.keys(), key=lambda k: (k is not None, k or 0)):
        (members_a, ids_a), (members_b, ids_b) = blocks_a[kb], blocks_b[kb]
        ids = sorted(set(ids_a) & set(ids_b))
        if not ids:
            continue
        matrices = (_matrix(members_a, ids, values), _matrix(members_b, ids, values))
        blocks.append(matrices)
        same_cells.append([c.seed for c in members_a] == [c.seed for c in members_b])
        for arm, matrix in enumerate(matrices):
            with np.errstate(invalid="ignore"):
                means[arm].extend(np.nanmean(matrix, axis=1))
    if not blocks:
        return None
    resampled = two_level(blocks, paired=paired, same_cells=same_cells)
    ci = percentile_interval(resampled[:, 0] - resampled[:, 1])
    if ci is None:
        return None
    return float(np.nanmean(means[0]) - np.nanmean(means[1])), ci


def interval_text(
    mean: float, ci: tuple[float, float] | None, *, signed: bool = False, lopsided: bool = True
) -> str:
    """``0.510±0.098``; ``1.000 [0.985, 1.000]`` where one side is over 1.5 times the other
    (``lopsided`` False: always the half-width, as older cells' intervals were shown)."""
    number = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    if ci is None:
        return number
    low, high = ci
    down, up = mean - low, high - mean
    # A mean outside its interval (results and records that disagree): the half-width.
    if lopsided and min(down, up) >= 0 and max(down, up) > 1.5 * min(down, up) + 5e-4:
        bounds = (f"{low:+.3f}", f"{high:+.3f}") if signed else (f"{low:.3f}", f"{high:.3f}")
        return f"{number} [{bounds[0]}, {bounds[1]}]"
    return f"{number}±{(high - low) / 2:.3f}"


def estimate_text(est: Estimate | None, *, signed: bool = False, missing: str = "—") -> str:
    if est is None:
        return missing
    return interval_text(est.mean, est.ci, signed=signed, lopsided=not est.fallback)


def ci_record(prefix: str, est: Estimate | None) -> dict[str, object]:
    """CSV fields of one estimate: ``<prefix>``, ``<prefix>_ci95_low`` / ``_high``."""
    if est is None:
        return {}
    record: dict[str, object] = {prefix: round(est.mean, 6)}
    if est.ci is not None:
        record[f"{prefix}_ci95_low"] = round(est.ci[0], 6)
        record[f"{prefix}_ci95_high"] = round(est.ci[1], 6)
    return record


def coverage_note(estimates: Iterable[Estimate | None]) -> str | None:
    """What the intervals of one table cover: the most training seeds and knowledge bases any
    of its bootstrap intervals resampled, and how many came from older cells."""
    shown = [e for e in estimates if e is not None and e.ci is not None]
    if not shown:
        return None
    current = [e for e in shown if not e.fallback]
    older = len(shown) - len(current)
    parts = []
    if current:
        train = max(e.train_seeds for e in current)
        kbs = max(e.kb_seeds for e in current)
        parts.append(
            f"Intervals: 95% over questions and up to {train} training seed(s) x {kbs} knowledge "
            "base(s) (two-level bootstrap: knowledge bases, seeds within, questions within, "
            "paired across a knowledge base's cells); exact binomial where every value is 0 or "
            "every value is 1."
        )
    if older:
        parts.append(
            f"{older} interval(s) from cells without per-question records (older kfr): Student t "
            "over the seeds' values, or the cell's own bootstrap over questions with one seed."
        )
    return " ".join(parts)

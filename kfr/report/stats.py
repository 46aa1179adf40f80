"""The report's statistics: the two-level bootstrap behind every interval, and the Student t
interval over seeds that older cells (no per-question records) fall back to.

**Two-level bootstrap.** A setting's number is the mean over its cells (training seeds, and
knowledge bases when ``data.novel_facts.seed`` varied) of each cell's mean over questions. Each
of :data:`SAMPLES` resamples draws, with replacement, knowledge bases; within each drawn
knowledge base its cells (training seeds); and its questions, one draw shared by every cell
(and every arm) of that knowledge base, since they answered the same question ids. The
resampled number is the mean over the drawn knowledge bases of the mean over the drawn cells of
the weighted mean over the drawn questions; the interval is the 2.5 and 97.5 percentiles of the
resampled numbers. One cell: the bootstrap over questions. Identical cells (a deterministic model
on two seeds): exactly that width again, never zero. Resamples are counts (how often each
question / cell is drawn), so a resample is one matrix product, and the random streams of each
level are separate, so adding identical cells never changes the questions drawn.

Values are floats with NaN where a question does not count (a diagnostic that does not apply);
a cell's mean is over the questions that count.

**Student t over seeds.** ``t(0.975, n - 1) * sd / sqrt(n)`` with the sample standard deviation;
the quantile comes from :func:`scipy.stats.t.ppf` (for 1 to 20 degrees of freedom it rounds to
the textbook table's three decimals: 12.706, 4.303, 3.182, ..., 2.086).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import cache, lru_cache

import numpy as np

SAMPLES = 2000  # resamples of every bootstrap
SEED = 20_240_521  # fixed: the same results always give the same report
LEVEL = 0.95
_CHUNK = 4_000_000  # draws per block when resampling (memory stays ~32 MB per block)

# One knowledge base's values: per arm, a cells x questions array (columns: the same question ids
# for every arm; rows: the arm's cells, in training-seed order).
Block = Sequence[np.ndarray]


@cache
def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student t needs at least 1 degree of freedom, got {df}")
    from scipy.stats import t  # imported when a report has several seeds: scipy loads slowly

    return float(t.ppf(0.975, df))


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """The two-sided 95% Student t interval of the mean of ``values`` (at least two)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"an interval over seeds needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def _counts(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """``rows x n``: how often each of ``n`` items is drawn in ``n`` draws with replacement
    (float32: small whole numbers, exact; half the memory traffic of the products below)."""
    out = np.empty((rows, n), dtype=np.float32)
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        idx += (np.arange(stop - start) * n)[:, None]
        out[start:stop] = np.bincount(idx.ravel(), minlength=(stop - start) * n).reshape(-1, n)
    return out


@lru_cache(maxsize=16)
def _kb_draws(samples: int, seed: int, kbs: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per knowledge base, the (resample, slot) pairs that drew it: slot j of resample b holds
    knowledge base ``idx[b, j]``; one knowledge base fills every slot with itself."""
    if kbs == 1:
        rows = np.arange(samples)
        return ((rows, np.zeros(samples, dtype=np.int64)),)
    idx = np.random.default_rng([seed, 1]).integers(0, kbs, size=(samples, kbs))
    return tuple(np.nonzero(idx == k) for k in range(kbs))


@lru_cache(maxsize=16)
def _question_weights(seed: int, samples: int, kbs: int, kb: int, n: int, stream: int):
    """The question resamples of one knowledge base (shared by its cells and arms; ``stream``
    > 0 only for an unpaired comparison, which draws each arm's questions on its own)."""
    rows = len(_kb_draws(samples, seed, kbs)[kb][0])
    weights = _counts(np.random.default_rng([seed, 2, kb, stream]), n, rows)
    weights.setflags(write=False)
    return weights


def _cell_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """cells x resamples: each cell's mean over the resampled questions that count (computed
    once for cells that answered alike, as a deterministic model does on every seed)."""
    if len(values) > 1:
        first: dict[bytes, int] = {}
        inverse = [first.setdefault(row.tobytes(), len(first)) for row in values]
        if len(first) < len(values):
            unique = values[[inverse.index(i) for i in range(len(first))]]
            return _cell_means(unique, weights)[inverse]
    present = ~np.isnan(values)
    if present.all():
        return (weights @ values.T.astype(np.float32)).T.astype(np.float64) / values.shape[1]
    numerator = weights @ np.where(present, values, 0.0).T.astype(np.float32)
    denominator = weights @ present.T.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)
    return means.T.astype(np.float64)


def _over_cells(means: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """resamples: the mean over the resampled cells (those with a mean) of ``means``."""
    if weights is None:
        return means[0]
    present = ~np.isnan(means.T)
    total = np.where(present, weights, 0.0).sum(axis=1)
    summed = np.where(present, weights * np.nan_to_num(means.T), 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, summed / total, np.nan)


def two_level(
    blocks: Sequence[Block],
    *,
    paired: bool = True,
    same_cells: Sequence[bool] | None = None,
    samples: int = SAMPLES,
    seed: int = SEED,
) -> np.ndarray:
    """``samples x arms``: each arm's resampled number (mean over knowledge bases of the mean
    over cells of the mean over questions). ``blocks``: one per knowledge base, each holding
    every arm's cells x questions array over the same question ids. ``paired``: the arms share
    each resample of questions, and of cells in the blocks whose ``same_cells`` is true (the
    arms' rows are the same training seeds, in the same order; default: equal row counts);
    unpaired, each arm draws its own."""
    if not blocks:
        raise ValueError("a bootstrap needs at least one knowledge base")
    arms = len(blocks[0])
    draws = _kb_draws(samples, seed, len(blocks))
    out = np.full((samples, len(blocks), arms), np.nan)
    for kb, block in enumerate(blocks):
        resample, slot = draws[kb]
        if not len(resample):
            continue
        same = len({len(v) for v in block}) == 1 if same_cells is None else same_cells[kb]
        shared_cells = paired and same
        for arm, values in enumerate(block):
            stream = 0 if paired else arm + 1
            questions = _question_weights(seed, samples, len(blocks), kb, values.shape[1], stream)
            cells = None
            if len(values) > 1:
                cell_stream = 0 if shared_cells else arm + 1
                rng = np.random.default_rng([seed, 3, kb, cell_stream])
                cells = _counts(rng, len(values), len(resample))
            out[resample, slot, arm] = _over_cells(_cell_means(values, questions), cells)
    # Every slot of every resample holds one knowledge base; NaN only where nothing counted.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where nothing counted
        return np.nanmean(out, axis=1)


def percentile_interval(resampled: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile interval of resampled numbers (None when none is finite)."""
    finite = resampled[np.isfinite(resampled)]
    if not len(finite):
        return None
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)

"""Forgetting: how much of what the base model knew a fine-tuned cell has lost.

On a control set of facts the base model answers (:mod:`kfr.evaluation.control_cache`),
``forgetting`` = base accuracy - the cell's accuracy: positive when fine-tuning broke known facts.
Its 95% interval is a paired percentile bootstrap over questions: each resample draws questions
and takes the mean of ``base_correct - cell_correct`` over them, so the question-to-question
spread both models share does not widen it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kfr.evaluation.metrics import bootstrap_interval


def forgetting(
    base_correct: Sequence[bool],
    cell_correct: Sequence[bool],
    *,
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"forgetting", "forgetting_ci95", "control_n", "control_acc", "control_base_acc"}``
    from per-question correctness of the base model and of the cell, on the same control
    questions in the same order (NaN where there are none)."""
    if len(base_correct) != len(cell_correct):
        raise ValueError(
            f"base and cell scored different control sets ({len(base_correct)} vs "
            f"{len(cell_correct)} questions)"
        )
    base = np.asarray(base_correct, dtype=np.float64)
    cell = np.asarray(cell_correct, dtype=np.float64)
    n = len(base)
    base_acc = float(base.mean()) if n else float("nan")
    cell_acc = float(cell.mean()) if n else float("nan")
    return {
        "forgetting": base_acc - cell_acc,
        "forgetting_ci95": bootstrap_interval(base - cell, samples=samples, seed=seed),
        "control_n": n,
        "control_acc": cell_acc,
        "control_base_acc": base_acc,
    }


__all__ = ["forgetting"]

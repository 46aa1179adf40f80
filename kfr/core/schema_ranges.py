"""Value ranges of the schema's numeric keys: a key declares its own with :func:`ranged`.

:func:`kfr.core.schema.check_ranges` enforces them for every composed config; a key added without
one fails ``tests/unit/test_config.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

RANGE = "range"  # the dataclass-field metadata key a numeric key's Range is declared under


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: ``low`` / ``high`` bounds (None: unbounded), each
    inclusive unless ``low_open`` / ``high_open``. Floats must also be finite; null passes
    (where the key's type allows it); a list of numbers is checked item by item."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def rule(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``: what a message says a value must be."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"


def ranged(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A numeric key's default and its valid range (``ge``/``gt``: at least / above, ``le``/
    ``lt``: at most / below), enforced for every config at composition (:func:`check_ranges`)."""
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise TypeError("give one lower bound (ge or gt) and one upper bound (le or lt)")
    bounds = Range(
        low=ge if gt is None else gt,
        high=le if lt is None else lt,
        low_open=gt is not None,
        high_open=lt is not None,
    )
    return field(default=default, metadata={RANGE: bounds})

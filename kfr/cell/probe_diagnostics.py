"""What each probe family's accuracy alone cannot say: per-question diagnostics and their means.

Every probe record in predictions.jsonl may carry ``"diagnostics": {name: value}``, a value per
question (null: the question does not count for that name); a cell's
``metrics["probes"][family]`` holds each name's mean over the questions that count, with its 95%
bootstrap interval and count, and the report re-aggregates the same values over seeds.

- ``two_hop*`` ``lure_rate``: the answer picked X's own value of the fact (where it is among the
  options: every question of version 3's ``two_hop_lure``, almost every one of version 2's
  ``two_hop``). A model that cannot compose sits at chance on the lure-free ``two_hop``; one that
  answers the one-hop question instead picks the lure.
- ``two_hop`` ``compositionality_gap`` (Press et al. 2023): 1 where the two-hop question was
  answered wrong, among the questions whose two one-hop parts were both answered right (X's
  ``mentor`` probe and the direct question about the mentor's fact); null elsewhere.
- ``comparison`` ``position_bias``: the answer named the first-named person (option 0: the
  options are the names in the question's order); ``consistency``: a pair and wording answered
  right in both name orders (on the first order's record; version 3's balanced design).
- ``reversal*`` ``acc_value_first_trained`` / ``acc_value_first_untrained``: correctness split by
  whether the value-first form of the fact (the value before the person's name in one sentence,
  or a training question about the value answered by the name) occurred in what the cell's model
  was trained on (its loss-bearing text; passages only read in a prompt do not count). Base and
  retrieval cells trained on nothing: every question is "untrained".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kfr.data.schema import Document, Question
from kfr.evaluation.metrics import Prediction, bootstrap_interval


def _fact(question: Question, documents: Mapping[str, Document]) -> str | None:
    """The value of the question's fact for its first source document's person."""
    if not question.source_ids or question.source_ids[0] not in documents:
        return None
    facts = documents[question.source_ids[0]].meta.get("facts") or {}
    value = facts.get(question.subject or "")
    return value if isinstance(value, str) else None


def _value_first(segments: Sequence[str], name: str, value: str) -> bool:
    for segment in segments:
        at = segment.find(value)
        if at >= 0 and segment.find(name, at + len(value)) >= 0:
            return True
    return False


def _comparison_unit(question_id: str) -> tuple[str, str] | None:
    """``(pair and wording, order)`` of a version 3 comparison id, else None."""
    head, _, order = question_id.rpartition("-")
    wording = head.rpartition("-")[2]
    return (head, order) if order in ("0", "1") and wording in ("born", "age") else None


def family_diagnostics(
    family: str,
    predictions: Sequence[Prediction],
    documents: Mapping[str, Document],
    trained: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """Per question of ``family``, its diagnostics (empty dicts where the family has none).
    ``trained``: the units the cell's model was trained on, sentences and question-answer pairs
    (:func:`kfr.finetune.checkpoints.trained_units`; None: it was not trained)."""
    out: list[dict[str, Any]] = [{} for _ in predictions]
    if family.startswith("two_hop"):
        for diag, p in zip(out, predictions, strict=True):
            own = _fact(p.question, documents)
            if own is not None and own in p.question.choices and own != p.question.answer_text:
                diag["lure_rate"] = p.prediction == p.question.choices.index(own)
    elif family.startswith("comparison"):
        by_unit: dict[str, dict[str, bool]] = {}
        for p in predictions:
            if (unit := _comparison_unit(p.question.id)) is not None:
                by_unit.setdefault(unit[0], {})[unit[1]] = p.correct
        for diag, p in zip(out, predictions, strict=True):
            diag["position_bias"] = p.prediction == 0
            unit = _comparison_unit(p.question.id)
            if unit is not None and len(by_unit[unit[0]]) == 2:
                diag["consistency"] = all(by_unit[unit[0]].values()) if unit[1] == "0" else None
    elif family.startswith("reversal"):
        by_name: dict[str, list[str]] = {}
        for p in predictions:
            by_name.setdefault(p.question.answer_text, [])
        for segment in trained or ():
            for name, found in by_name.items():
                if name in segment:
                    found.append(segment)
        for diag, p in zip(out, predictions, strict=True):
            value = _fact(p.question, documents)
            name = p.question.answer_text
            seen = value is not None and _value_first(by_name[name], name, value)
            diag["acc_value_first_trained"] = p.correct if seen else None
            diag["acc_value_first_untrained"] = None if seen else p.correct
    return out


def compositionality_gap(
    two_hop: Sequence[Prediction],
    diagnostics: list[dict[str, Any]],
    mentor: Sequence[Prediction],
    direct: Sequence[Prediction],
    documents: Mapping[str, Document],
) -> None:
    """Add ``compositionality_gap`` to each two-hop question's ``diagnostics`` (in place): 1 if
    wrong, 0 if right, where X's mentor question and the direct question about the mentor's fact
    were both answered right; null elsewhere."""
    mentor_right = {p.question.source_ids[0]: p.correct for p in mentor if p.question.source_ids}
    direct_right = {p.question.id: p.correct for p in direct}
    for diag, p in zip(diagnostics, two_hop, strict=True):
        ids = p.question.source_ids or ()
        if len(ids) < 2 or ids[0] not in documents:
            continue
        # Direct question ids of the generated set: "<document id>-<attribute>".
        second = direct_right.get(f"{ids[1]}-{p.question.subject}")
        both = mentor_right.get(ids[0]) is True and second is True
        diag["compositionality_gap"] = (not p.correct) if both else None


def summarize_diagnostics(
    diagnostics: Sequence[Mapping[str, Any]], *, samples: int, seed: int
) -> dict[str, Any]:
    """``{name, name_ci95, name_n}`` per diagnostic name, over the questions where it counts."""
    names = sorted({name for diag in diagnostics for name in diag})
    out: dict[str, Any] = {}
    for name in names:
        values = np.asarray(
            [float(d[name]) for d in diagnostics if d.get(name) is not None], dtype=np.float64
        )
        out[name] = float(values.mean()) if len(values) else None
        out[f"{name}_ci95"] = bootstrap_interval(values, samples=samples, seed=seed)
        out[f"{name}_n"] = len(values)
    return out


__all__ = [
    "compositionality_gap",
    "family_diagnostics",
    "summarize_diagnostics",
]

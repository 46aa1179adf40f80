"""The probe details table: every arm on every probe family, with PMI accuracy and diagnostics.

One row per model x task x shots x arm x probe family the arm scored: its accuracy, its accuracy
when the answer is picked by domain-conditional PMI (``acc_pmi``) and every diagnostic metric its
cells report for that family (``lure_rate``, ``compositionality_gap``, ``position_bias``, ...:
whatever names the cells' results and per-question records hold, one column each, "—" where a
family has none), each the mean over seeds with its 95% interval (:mod:`kfr.report.intervals`).
Made only when some cell has PMI accuracy or a diagnostic on a probe family.
"""

from __future__ import annotations

from collections.abc import Sequence

from kfr.report.aggregates import Aggregate
from kfr.report.arms import answers_label, arm_label, arm_order, probe_families
from kfr.report.intervals import Estimate, ci_record, coverage_note, estimate_text
from kfr.report.render import MISSING, Table, model_label


def _names(aggs: Sequence[Aggregate], family: str) -> list[str]:
    """Every diagnostic name any cell reports for ``family``."""
    return sorted({name for a in aggs for c in a.cells for name in c.diagnostic_names(family)})


def probe_details_table(aggs: list[Aggregate]) -> Table | None:
    """Every arm x probe family with acc, acc_pmi and the family's diagnostics; None when no
    cell has PMI accuracy or a diagnostic on a probe family."""
    families = probe_families(aggs)
    by_family = {f: _names(aggs, f) for f in families}
    diagnostics = sorted({n for names in by_family.values() for n in names})
    pmi = any(a.estimate("acc_pmi", f) is not None for a in aggs for f in families)
    if not diagnostics and not pmi:
        return None
    ordered = sorted(aggs, key=arm_order)
    rows, records, shown = [], [], []
    for agg in ordered:
        for family in families:
            acc = agg.estimate("acc", family)
            if acc is None:
                continue
            estimates: list[tuple[str, Estimate | None]] = [("acc", acc)]
            estimates.append(("acc_pmi", agg.estimate("acc_pmi", family)))
            estimates += [
                (name, agg.estimate(name, family) if name in by_family[family] else None)
                for name in diagnostics
            ]
            shown += [est for _, est in estimates]
            retrieval = answers_label(agg)
            rows.append(
                [model_label(agg.model), agg.task, arm_label(agg), retrieval, family,
                 agg.seeds_label, *(estimate_text(est) for _, est in estimates)]
            )  # fmt: skip
            record: dict[str, object] = {
                "table": "probe_details", "model": agg.model, "task": agg.task,
                "shots": agg.shots, "arm": arm_label(agg), "k": agg.k, "family": family,
                "train_seeds": agg.train_seeds, "kb_seeds": agg.kb_seeds,
            }  # fmt: skip
            for name, est in estimates:
                record |= ci_record(name, est)
            records.append(record)
    header = ["Model", "Task", "Arm", "Answers", "Family", "Seeds", "Acc", "Acc PMI"]
    header += diagnostics
    notes = [
        "Acc PMI: the choice with the highest domain-conditional PMI (log P(answer | question) - "
        "log P(answer | a neutral prompt)). Diagnostics: the mean over the questions each "
        f"counts (e.g. lure_rate: picked the distractor; consistency: a pair right in both "
        f"orders); {MISSING} where the family has no such metric."
    ]
    if (note := coverage_note(shown)) is not None:
        notes.append(note)
    title = "Probe families per arm: accuracy, PMI accuracy and diagnostics"
    return Table("probe_details", title, header, rows, records, notes)

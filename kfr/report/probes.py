"""Which arm answers each probe family best, by how much, and whether the difference is real.

One row per model x task x shots x probe family: the best arm (each arm at its best setting, e.g.
RAG at its best K), its accuracy, the next best arm and the margin between them (with the paired
bootstrap interval of the difference: the same question resamples for both), and an exact
McNemar test on the questions both answered (the same seed; the probe records of each cell's
predictions.jsonl, never mixed with its direct questions). The family's chance level says
whether the best is any better than guessing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from kfr.report.aggregates import Aggregate
from kfr.report.arms import arm_label, correct_answers, mcnemar, probe_families
from kfr.report.intervals import coverage_note, difference, estimate_text, interval_text
from kfr.report.render import MISSING, Table, model_label


def _label(agg: Aggregate) -> str:
    return arm_label(agg) + (f" K={agg.k}" if agg.cells[0].retrieve and agg.k is not None else "")


def _best_per_arm(aggs: Sequence[Aggregate], family: str) -> list[tuple[float, Aggregate]]:
    """Each arm's best aggregate on ``family``, best first. The oracle context is a reference
    (the model shown exactly the documents it needs), not an arm to pick: it is left out here
    and shown in the probe-details table."""
    best: dict[str, tuple[float, Aggregate]] = {}
    for agg in aggs:
        scored = agg.probe(family)
        if scored is None or agg.method == "oracle":
            continue
        arm = arm_label(agg)
        if arm not in best or scored[0] > best[arm][0]:
            best[arm] = (scored[0], agg)
    return sorted(best.values(), key=lambda item: (-item[0], _label(item[1])))


def _paired(best: Aggregate, other: Aggregate, family: str) -> tuple[str, dict[str, object]]:
    """McNemar of ``best`` against ``other`` on the family's questions of one shared seed."""
    by_seed = {(c.seed, c.kb_seed): c for c in other.cells if family in c.probes}
    cell = next(
        (c for c in best.cells if (c.seed, c.kb_seed) in by_seed and family in c.probes), None
    )
    if cell is None:
        return MISSING, {}
    mine = correct_answers(cell, family)
    theirs = correct_answers(by_seed[(cell.seed, cell.kb_seed)], family)
    if not mine or not theirs:
        return MISSING, {}
    lost, gained, p = mcnemar(mine, theirs)
    record = {"mcnemar_gained": gained, "mcnemar_lost": lost, "mcnemar_p": p, "seed": cell.seed}
    where = f"seed {cell.seed}"
    if cell.kb_seed is not None and best.kb_seeds > 1:
        record["kb_seed"] = cell.kb_seed
        where += f", knowledge base {cell.kb_seed}"
    return f"{gained}/{lost}, p={p:.2g} ({where})", record


def probes_table(aggs: list[Aggregate]) -> Table | None:
    """Best arm per probe family; None when no cell scored a probe family."""
    families = probe_families(aggs)
    if not families:
        return None
    groups: dict[tuple, list[Aggregate]] = defaultdict(list)
    for agg in aggs:
        groups[(agg.model, agg.task, agg.shots)].append(agg)
    rows, records = [], []
    shown = []
    for (model, task, shots), group in sorted(groups.items()):
        for family in families:
            ranked = _best_per_arm(group, family)
            if not ranked:
                continue
            (acc, best), runner = ranked[0], ranked[1] if len(ranked) > 1 else None
            chance = next(
                (c.probes[family].get("chance") for c in best.cells if family in c.probes), None
            )
            record: dict[str, object] = {
                "table": "probes", "model": model, "task": task, "shots": shots,
                "family": family, "chance": chance, "best_arm": _label(best),
                "best_acc": round(acc, 6), "arms": len(ranked),
            }  # fmt: skip
            next_text, margin, versus = MISSING, MISSING, MISSING
            shown.append(best.estimate("acc", family))
            if runner is not None:
                next_acc, other = runner
                shown.append(other.estimate("acc", family))
                next_text = f"{_label(other)} {estimate_text(other.estimate('acc', family))}"
                margin = f"{acc - next_acc:+.3f}"
                versus, paired = _paired(best, other, family)
                record |= {"next_arm": _label(other), "next_acc": round(next_acc, 6)}
                record |= {"margin": round(acc - next_acc, 6), **paired}
                interval = difference(best.cells, other.cells, "acc", family)
                if interval is not None:  # the paired difference: same questions and seeds
                    margin = interval_text(*interval, signed=True)
                    record |= {"margin_paired": round(interval[0], 6)}
                    record |= {"margin_ci95_low": round(interval[1][0], 6)}
                    record |= {"margin_ci95_high": round(interval[1][1], 6)}
            rows.append(
                [
                    model_label(model), task, str(shots), family,
                    MISSING if chance is None else f"{chance:.3f}",
                    _label(best), estimate_text(best.estimate("acc", family)), next_text, margin,
                    versus,
                ]
            )  # fmt: skip
            records.append(record)
    header = ["Model", "Task", "Shots", "Family", "Chance", "Best arm", "Acc", "Next best"]
    header += ["Margin", "Best vs next"]
    notes = [
        "Each arm at its best setting (mean over seeds, 95% interval). Margin: best minus next, "
        "with its paired interval where both have per-question records (the same question and "
        "seed resamples for both). Best vs next: the family's questions the "
        "best arm answers and the next does not / the reverse, on one seed both ran, exact "
        "McNemar p. Probe families ask for the injected facts in forms no training data uses: "
        "reversal (from a value back to the person; reversal_two_cue: with a second fact), "
        "two_hop (a fact of the person's mentor: two documents; two_hop_lure: the person's own "
        "value among the options), mentor (the one hop), comparison (two people's birth years "
        "compared). The oracle context (the model shown each question's documents) is a "
        "reference, in the probe-details table, not an arm here."
    ]
    if (note := coverage_note(shown)) is not None:
        notes.append(note)
    return Table("probes", "Probe families: the best arm per family", header, rows, records, notes)

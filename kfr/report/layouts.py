"""The paper's table layouts: which aggregate fills which row and column.

- Methods table (paper Table 1): rows task x shots, per model the columns Base / Base+RAG / FT /
  FT+RAG. RAG columns show the best K (the paper's practice: "the table reports the best K per
  cell"); FT columns use fine-tuning without paraphrases when that was run.
- Paraphrase table (paper Table 2, current events): rows models, columns Base, Base+RAG, FT-reg,
  FT-par, FT-reg+RAG, FT-par+RAG; made for every task whose fine-tuning used paraphrases.
- Curves: accuracy against the paraphrase count and against K, when a sweep varied them.

Every position shows the paper's value where the paper has that cell. A position without results
is shown as "—" and listed as missing, or as FAILED / NO RESULT when a cell was tried there.
Aggregation over seeds is :mod:`kfr.report.aggregates`; the text of a position is
:mod:`kfr.report.render`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from kfr.report.aggregates import Aggregate, Picked, Selector, pick
from kfr.report.collect import Attempt
from kfr.report.intervals import coverage_note
from kfr.report.paper import (
    CURRENT_EVENTS,
    PAPER_MODELS,
    TABLE1_METHODS,
    paper_table1,
    paper_table2,
)
from kfr.report.render import (
    METHOD_LABELS,
    MISSING,
    Table,
    format_position,
    model_label,
    position_record,
)


def _reg_first(aggs: Sequence[Aggregate]) -> list[Aggregate]:
    """Fine-tuning without paraphrases when run, else the fewest paraphrases."""
    aggs = [a for a in aggs if a.paraphrase_arm]
    if not aggs:
        return []
    fewest = min(a.paraphrases or 0 for a in aggs)
    return [a for a in aggs if (a.paraphrases or 0) == fewest]


def _reg(aggs: Sequence[Aggregate]) -> list[Aggregate]:
    return [a for a in aggs if not a.paraphrases and a.paraphrase_arm]


def _par(aggs: Sequence[Aggregate]) -> list[Aggregate]:
    """Fine-tuning with the most paraphrases run (the paper's FT-par used up to 10)."""
    aggs = [a for a in aggs if a.paraphrase_arm]
    counts = [a.paraphrases for a in aggs if a.paraphrases]
    return [a for a in aggs if counts and a.paraphrases == max(counts)]


Placed = Aggregate | Attempt


def ordered_models(items: Iterable[Placed]) -> list[str]:
    present = {a.model for a in items}
    return [m for m in PAPER_MODELS if m in present] + sorted(present - set(PAPER_MODELS))


def _absent(attempts: Sequence[Attempt], method: str, select: Selector | None = None) -> str:
    """What an empty position shows: FAILED / NO RESULT when a cell was tried there."""
    tried = [a for a in attempts if a.method == method]
    if select is _reg:
        tried = [a for a in tried if not a.paraphrases]
    elif select is _par:
        tried = [a for a in tried if a.paraphrases]
    statuses = {a.status for a in tried}
    return "FAILED" if "FAILED" in statuses else "NO RESULT" if statuses else MISSING


def methods_table(aggs: list[Aggregate], attempts: Sequence[Attempt] = ()) -> Table | None:
    """Paper Table 1 layout: rows task x shots; per model Base / Base+RAG / FT / FT+RAG."""
    placed: list[Placed] = [*aggs, *attempts]
    present = {a.method for a in placed}
    methods = [m for m in TABLE1_METHODS if m in present]
    if not methods:
        return None
    models = ordered_models(placed)
    rows_keys = sorted({(a.task, a.shots) for a in placed})
    max_seeds = max((a.seeds for a in aggs), default=1)
    header = ["Task", "Shots"] + [
        f"{model_label(m)} {METHOD_LABELS[meth]}" for m in models for meth in methods
    ]
    by_position: dict[tuple, list[Aggregate]] = defaultdict(list)
    tried: dict[tuple, list[Attempt]] = defaultdict(list)
    for a in aggs:
        by_position[(a.task, a.shots, a.model)].append(a)
    for t in attempts:
        tried[(t.task, t.shots, t.model)].append(t)
    selectors: dict[str, Selector | None] = {"ft": _reg_first, "ft_rag": _reg_first}
    rows, records, missing, shown = [], [], [], []
    for task, shots in rows_keys:
        row = [task, str(shots)]
        for model in models:
            here = by_position[(task, shots, model)]
            base = pick(here, "base")
            for method in methods:
                picked = pick(here, method, selectors.get(method))
                shown += [] if picked is None else [picked.agg]
                paper = paper_table1(model, task, shots, method)
                absent = _absent(tried[(task, shots, model)], method)
                row.append(format_position(picked, base, paper, max_seeds, absent=absent))
                position = {"task": task, "shots": shots, "model": model, "method": method}
                records.append(position_record("methods", position, picked, base, paper, absent))
                if picked is None and absent == MISSING:
                    missing.append(f"{model} {task} {shots}-shot {METHOD_LABELS[method]}")
        rows.append(row)
    notes = []
    if "ft" in methods or "ft_rag" in methods:
        notes.append("FT columns: fine-tuned without paraphrases where run (else the fewest).")
    _cover(notes, shown)
    title = "Accuracy by method (paper Table 1 layout)"
    return Table("methods", title, header, rows, records, notes, missing)


PARAPHRASE_COLUMNS: tuple[tuple[str, str, str, Selector | None], ...] = (
    ("base", "Base", "base", None),
    ("rag", "Base+RAG", "rag", None),
    ("ft_reg", "FT-reg", "ft", _reg),
    ("ft_par", "FT-par", "ft", _par),
    ("ft_reg_rag", "FT-reg+RAG", "ft_rag", _reg),
    ("ft_par_rag", "FT-par+RAG", "ft_rag", _par),
)


def _tried(attempts: Sequence[Attempt], method: str, select: Selector | None) -> bool:
    return _absent(attempts, method, select) != MISSING


def paraphrase_tables(aggs: list[Aggregate], attempts: Sequence[Attempt] = ()) -> list[Table]:
    """Paper Table 2 layout, one table per task x shots whose fine-tuning used paraphrases."""
    tables = []
    placed: list[Placed] = [*aggs, *attempts]
    for task, shots in sorted({(a.task, a.shots) for a in placed}):
        mine = [a for a in aggs if a.task == task and a.shots == shots]
        tried_here = [t for t in attempts if t.task == task and t.shots == shots]
        if not any(a.paraphrases for a in [*mine, *tried_here]) and task != CURRENT_EVENTS:
            continue
        models = ordered_models([*mine, *tried_here])
        max_seeds = max((a.seeds for a in mine), default=1)
        columns = [
            c
            for c in PARAPHRASE_COLUMNS
            if pick(mine, c[2], c[3]) is not None or _tried(tried_here, c[2], c[3])
        ]
        counts = sorted({a.paraphrases for a in mine if a.paraphrases})
        rows, records, missing, shown = [], [], [], []
        for model in models:
            model_aggs = [a for a in mine if a.model == model]
            model_tried = [t for t in tried_here if t.model == model]
            base = pick(model_aggs, "base")
            row = [model_label(model)]
            for key, label, method, select in columns:
                picked = pick(model_aggs, method, select)
                shown += [] if picked is None else [picked.agg]
                paper = paper_table2(model, task, shots, key)
                absent = _absent(model_tried, method, select)
                row.append(format_position(picked, base, paper, max_seeds, absent=absent))
                position = {"task": task, "shots": shots, "model": model, "method": key}
                table_name = f"paraphrases_{task}"
                records.append(position_record(table_name, position, picked, base, paper, absent))
                if picked is None and absent == MISSING:
                    missing.append(f"{model} {task} {shots}-shot {label}")
            rows.append(row)
        notes = []
        if counts:
            notes.append(
                f"FT-par: {max(counts)} paraphrases per document "
                f"(counts run: {', '.join(map(str, counts))})."
            )
        _cover(notes, shown)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)
        title = f"{task} {shots}-shot: fine-tuning with paraphrases (paper Table 2 layout)"
        header = ["Model"] + [c[1] for c in columns]
        name = f"paraphrases_{safe}_{shots}shot"
        tables.append(Table(name, title, header, rows, records, notes, missing))
    return tables


def curve_points(aggs: list[Aggregate], methods: tuple[str, ...], axis: str) -> dict[tuple, dict]:
    """(model, task, shots, method) -> {axis value: best aggregate at that value}."""
    curves: dict[tuple, dict[int, Aggregate]] = defaultdict(dict)
    for a in aggs:
        value = getattr(a, axis)
        if a.method not in methods or value is None:
            continue
        if axis == "k" and a.paraphrases:  # K curves: fine-tuning without paraphrases
            continue
        if not a.paraphrase_arm:  # entity-graph texts: the arms table and its token plot
            continue
        key = (a.model, a.task, a.shots, a.method)
        best = curves[key].get(value)
        if best is None or a.mean > best.mean:
            curves[key][value] = a
    return {k: v for k, v in curves.items() if len(v) > 1}


def curve_table(aggs: list[Aggregate], axis: str) -> Table | None:
    """Accuracy against ``axis`` ("paraphrases" or "k") for the cells that varied it."""
    methods = ("ft", "ft_rag") if axis == "paraphrases" else ("rag", "ft_rag")
    curves = curve_points(aggs, methods, axis)
    if not curves:
        return None
    values = sorted({v for points in curves.values() for v in points})
    label = "paraphrases" if axis == "paraphrases" else "K"
    rows, records = [], []
    for (model, task, shots, method), points in sorted(curves.items()):
        row = [model_label(model), task, str(shots), METHOD_LABELS.get(method, method)]
        for value in values:
            agg = points.get(value)
            row.append(
                MISSING
                if agg is None
                else format_position(Picked(agg, 1), None, None, agg.seeds, show_k=axis != "k")
            )
            position = {"task": task, "shots": shots, "model": model, "method": method, axis: value}
            picked = None if agg is None else Picked(agg, 1)
            records.append(position_record(f"by_{axis}", position, picked, None, None))
        rows.append(row)
    header = ["Model", "Task", "Shots", "Method"] + [f"{label}={v}" for v in values]
    title = f"Accuracy vs {'paraphrase count' if axis == 'paraphrases' else 'K'}"
    notes: list[str] = []
    _cover(notes, [agg for points in curves.values() for agg in points.values()])
    return Table(f"by_{axis}", title, header, rows, records, notes)


def _cover(notes: list[str], shown: Sequence[Aggregate]) -> None:
    """The line under a table saying what the intervals of its accuracies cover."""
    if (note := coverage_note(a.estimate() for a in shown)) is not None:
        notes.append(note)

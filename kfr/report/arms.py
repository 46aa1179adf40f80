"""The arms table: every knowledge-injection arm side by side, with what it costs.

One row per model x task x shots x arm (cells differing only by seeds aggregated): accuracy with
its 95% interval (:mod:`kfr.report.intervals`), the same per probe family the cells scored
(:mod:`kfr.cell.probes`), PMI accuracy where scored, whether the arm reads retrieved chunks at
answer time, the paired difference to FT-reg, forgetting on the control set (base accuracy minus
the arm's) and, where the cells have them, the change in log P of the control answers and the KL
from the base model there, accuracy per SliCK category of the evaluation questions (which facts
an arm injects, which it breaks), and the training tokens and wall time it spent. The arms of
the paper (Base, RAG, FT-reg, FT-par and their +RAG forms) come first, then the newer recipes.
"""

from __future__ import annotations

from collections.abc import Sequence

from kfr.cell.probes import PROBE_FAMILIES
from kfr.report.aggregates import Aggregate
from kfr.report.collect import CellResult
from kfr.report.intervals import (
    ci_record,
    coverage_note,
    difference,
    estimate_text,
    interval_text,
)
from kfr.report.render import MISSING, Table, model_label

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
_ORDER = (
    "Base", "Oracle context", "RAG", "FT-reg", "FT-par", "FT-EntiGraph", "QA-FT", "QA-FT+reverse",
    "Distill", "FT-reg+RAG", "FT-par+RAG", "FT-EntiGraph+RAG", "RAFT",
)  # fmt: skip
_NEW = {"qa_ft": "QA-FT", "qa_ft_reverse": "QA-FT+reverse", "distill": "Distill", "raft": "RAFT"}


def arm_label(agg: Aggregate) -> str:
    """What the paper and METHODS.md call this aggregate's arm (+ its fine-tuning mode when it
    is not full fine-tuning, e.g. "QA-FT (lora)", "replay=0.5" when it trained with replay
    texts, and "hops=2" for two-hop retrieval): settings that are their own frontier points."""
    settings = agg.cells[0].settings
    mode = settings.get("mode")
    suffix = f" ({mode})" if mode and mode != "full" else ""
    if settings.get("replay_share"):  # finetune.replay_share > 0: a point of its own
        suffix += f" replay_share={settings['replay_share']:g}"
    if settings.get("replay_ratio"):  # the older finetune.replay_ratio
        suffix += f" replay={settings['replay_ratio']:g}"
    if settings.get("hops", 1) > 1:  # retriever.hops=2: its own arm beside one-hop retrieval
        suffix += f" hops={settings['hops']}"
    return _base_label(agg) + suffix


def arm_order(agg: Aggregate) -> tuple:
    """Rows by model, task, shots, then the paper's arms first, then the newer recipes."""
    key = (agg.model, agg.task, agg.shots, _ORDER.index(_base_label(agg)), agg.k or 0)
    return (*key, arm_label(agg), -agg.mean)


def _base_label(agg: Aggregate) -> str:
    if agg.method in _NEW:
        return _NEW[agg.method]
    if agg.method in ("base", "rag", "oracle"):
        return {"base": "Base", "rag": "RAG", "oracle": "Oracle context"}[agg.method]
    if agg.augment_source == "entigraph":
        name = "FT-EntiGraph"
    else:
        name = "FT-par" if agg.paraphrases else "FT-reg"
    return name + ("+RAG" if agg.method == "ft_rag" else "")


def answers_label(agg: Aggregate) -> str:
    """How the arm answers: with K retrieved chunks, given its source documents, or alone."""
    if agg.cells[0].retrieve:
        return f"K={agg.k}"
    return "source documents" if agg.method == "oracle" else "closed-book"


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


# Control-set columns: (metric, header); forgetting always, the others where a cell has them.
_CONTROL_COLUMNS = (
    ("forgetting", "Forgetting"),
    ("control_logp_change", "Δlog P control"),
    ("control_kl", "KL control"),
)


def _estimated(agg: Aggregate, name: str, family: str | None = None) -> tuple[str, dict]:
    """An estimate's text and CSV fields (``<name>[_<family>]``, its interval's bounds)."""
    est = agg.estimate(name, family)
    signed = name in ("forgetting", "control_logp_change")
    prefix = name if family is None else f"{name}_{family}"
    return estimate_text(est, signed=signed), ci_record(prefix, est)


def _categories(agg: Aggregate) -> tuple[list[str], dict[str, object]]:
    texts, record = [], {}
    for category in CATEGORIES:
        accs = [(c.per_category.get(category) or {}).get("acc") for c in agg.cells]
        ns = [(c.per_category.get(category) or {}).get("n") for c in agg.cells]
        acc = _mean(accs)
        if acc is None or not ns[0]:
            texts.append(MISSING)
            continue
        texts.append(f"{acc:.2f} (n={ns[0]})")
        record[f"acc_{category}"] = round(acc, 6)
        record[f"n_{category}"] = ns[0]
    return texts, record


def probe_families(aggs: Sequence[Aggregate]) -> list[str]:
    """The probe families any cell scored, in kfr's order (unknown ones after, sorted)."""
    present = {f for a in aggs for c in a.cells for f in c.probes}
    return [f for f in PROBE_FAMILIES if f in present] + sorted(present - set(PROBE_FAMILIES))


def _probe_columns(agg: Aggregate, families: Sequence[str]) -> tuple[list[str], dict[str, object]]:
    texts, record = [], {}
    for family in families:
        text, fields = _estimated(agg, "acc", family)
        texts.append(text)
        record |= fields
    return texts, record


def correct_answers(cell: CellResult, family: str | None = None) -> dict[str, bool] | None:
    """Question id -> answered correctly, from the cell's predictions.jsonl: the direct
    questions (records without a ``family``), or one probe family's."""
    values = cell.question_values("acc", family)
    return None if values is None else {q: bool(v) for q, v in values.items()}


def mcnemar(arm: dict[str, bool], reference: dict[str, bool]) -> tuple[int, int, float]:
    """(questions the arm gets wrong and the reference right, the reverse, exact McNemar p)."""
    shared = arm.keys() & reference.keys()
    lost = sum(reference[q] and not arm[q] for q in shared)
    gained = sum(arm[q] and not reference[q] for q in shared)
    n = lost + gained
    if not n:
        return lost, gained, 1.0
    from scipy.stats import binomtest  # scipy loads slowly: only when a report compares arms

    return lost, gained, binomtest(min(lost, gained), n, 0.5).pvalue


def _versus_ft_reg(agg: Aggregate, aggs: Sequence[Aggregate]) -> tuple[str, dict[str, object]]:
    """McNemar on paired questions against FT-reg of the same model, task, shots and seeds, and
    the paired bootstrap interval of the accuracy difference (every seed both ran)."""
    reference = [
        a
        for a in aggs
        if arm_label(a) == "FT-reg"
        and (a.model, a.task, a.shots) == (agg.model, agg.task, agg.shots)
    ]
    if not reference or agg in reference or agg.method == "base":
        return MISSING, {}
    texts, record = [], {}
    by_seed = {(c.seed, c.kb_seed): c for c in reference[0].cells}
    cell = next((c for c in agg.cells if (c.seed, c.kb_seed) in by_seed), None)
    arm = None if cell is None else correct_answers(cell)
    ref = None if cell is None else correct_answers(by_seed[(cell.seed, cell.kb_seed)])
    if arm is not None and ref is not None:
        lost, gained, p = mcnemar(arm, ref)
        texts.append(f"{gained}/{lost}, p={p:.2g}")
        record |= {"vs_ft_reg_gained": gained, "vs_ft_reg_lost": lost, "vs_ft_reg_p": p}
    paired = difference(agg.cells, reference[0].cells)
    if paired is not None:
        diff, ci = paired
        texts.append(f"Δ{interval_text(diff, ci, signed=True)}")
        record |= {"vs_ft_reg_diff": round(diff, 6), "vs_ft_reg_diff_ci95_low": round(ci[0], 6)}
        record["vs_ft_reg_diff_ci95_high"] = round(ci[1], 6)
    return ("; ".join(texts) or MISSING), record


def arms_table(aggs: list[Aggregate]) -> Table | None:
    """The arms of every model x task x shots; None when no new arm or forgetting was run."""
    families = probe_families(aggs)
    new = bool(families) or any(
        a.method in _NEW or a.augment_source == "entigraph" or a.cells[0].forgetting is not None
        for a in aggs
    )
    if not new:
        return None
    rows, records = [], []
    ordered = sorted(aggs, key=arm_order)
    pmi = any(a.estimate("acc_pmi") is not None for a in aggs)
    control = [
        (name, header)
        for name, header in _CONTROL_COLUMNS
        if name == "forgetting" or any(a.estimate(name) is not None for a in aggs)
    ]
    for agg in ordered:
        arm = arm_label(agg)
        acc = estimate_text(agg.estimate(), missing=f"{agg.mean:.3f}")
        pmi_text, pmi_record = _estimated(agg, "acc_pmi") if pmi else ("", {})
        control_texts, control_record = [], {}
        for name, _ in control:
            text, fields = _estimated(agg, name)
            control_texts.append(text)
            control_record |= fields
        categories, category_record = _categories(agg)
        tokens = _mean([c.train_tokens for c in agg.cells])
        wall = _mean([c.train_wall_s for c in agg.cells])
        retrieval = answers_label(agg)
        versus, versus_record = _versus_ft_reg(agg, aggs)
        probes, probe_record = _probe_columns(agg, families)
        rows.append(
            [
                model_label(agg.model), agg.task, arm, retrieval, acc, *probes,
                *([pmi_text] if pmi else []), agg.seeds_label, versus, *control_texts,
                *categories,
                MISSING if tokens is None else f"{tokens:,.0f}",
                MISSING if wall is None else f"{wall:.0f}",
            ]
        )  # fmt: skip
        records.append(
            {
                "table": "arms", "model": agg.model, "task": agg.task, "shots": agg.shots,
                "arm": arm, "method": agg.method, "k": agg.k, "paraphrases": agg.paraphrases,
                "acc_mean": round(agg.mean, 6),
                "ci95_low": None if agg.ci95 is None else round(agg.ci95[0], 6),
                "ci95_high": None if agg.ci95 is None else round(agg.ci95[1], 6),
                "ci_over": agg.ci_over, "seeds": agg.seeds, "train_seeds": agg.train_seeds,
                "kb_seeds": agg.kb_seeds, **probe_record, **pmi_record, **versus_record,
                **control_record, **category_record, "train_tokens": tokens,
                "train_wall_s": wall, "folders": " ".join(str(c.path) for c in agg.cells),
            }
        )  # fmt: skip
    header = ["Model", "Task", "Arm", "Answers", "Acc", *(f"Acc {f}" for f in families)]
    header += ["Acc PMI"] if pmi else []
    header += ["Seeds", "vs FT-reg", *(h for _, h in control)]
    header += [f"Acc {c}" for c in CATEGORIES] + ["Train tokens", "Train s"]
    notes = [
        "Acc: mean over seeds with its 95% interval; Acc <family>: the same on a probe family's "
        "questions (forms never trained on); Acc PMI: the answer picked by domain-conditional "
        "PMI. Seeds: training seeds (x knowledge bases). vs FT-reg: questions gained/lost "
        "against FT-reg of the same seed, exact McNemar p; Δ: the accuracy difference with its "
        "paired interval (same question and seed resamples for both arms). Forgetting: base "
        "accuracy on the control set of known facts minus the arm's; Δlog P control: the mean "
        "change in log P of the right answer there; KL control: KL(base || arm) of the next "
        "token there. Acc by SliCK category of the base model's knowledge of each question "
        "(Gekhman et al. 2024); n = questions in it."
    ]
    estimates = [a.estimate() for a in aggs] + [
        a.estimate("acc", f) for a in aggs for f in families
    ]
    estimates += [a.estimate(name) for a in aggs for name, _ in control]
    if (note := coverage_note(estimates)) is not None:
        notes.append(note)
    return Table("arms", "Knowledge-injection arms and their cost", header, rows, records, notes)

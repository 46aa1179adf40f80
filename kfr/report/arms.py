"""The arms table: every knowledge-injection arm side by side, with what it costs.

One row per model x task x shots x arm (cells differing only by seed aggregated): accuracy with
its 95% interval, the same per probe family the cells scored (:mod:`kfr.cell.probes`), whether
the arm reads retrieved chunks at answer time, forgetting on the control set (base accuracy minus
the arm's, paired interval; mean over seeds), accuracy per SliCK category of the evaluation
questions (which facts an arm injects, which it breaks), and the training tokens and wall time it
spent. The arms of the paper (Base, RAG, FT-reg, FT-par and their +RAG forms) come first, then
the newer recipes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from kfr.cell.folder import PREDICTIONS_FILE
from kfr.cell.probes import PROBE_FAMILIES
from kfr.report.aggregates import Aggregate
from kfr.report.render import MISSING, Table, model_label

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
_ORDER = (
    "Base", "RAG", "FT-reg", "FT-par", "FT-EntiGraph", "QA-FT", "QA-FT+reverse", "Distill",
    "FT-reg+RAG", "FT-par+RAG", "FT-EntiGraph+RAG", "RAFT",
)  # fmt: skip
_NEW = {"qa_ft": "QA-FT", "qa_ft_reverse": "QA-FT+reverse", "distill": "Distill", "raft": "RAFT"}


def arm_label(agg: Aggregate) -> str:
    """What the paper and METHODS.md call this aggregate's arm (+ its fine-tuning mode when it
    is not full fine-tuning, e.g. "QA-FT (lora)", "replay=0.5" when it trained with replay
    texts, and "hops=2" for two-hop retrieval): settings that are their own frontier points."""
    settings = agg.cells[0].settings
    mode = settings.get("mode")
    suffix = f" ({mode})" if mode and mode != "full" else ""
    if settings.get("replay_ratio"):  # finetune.replay_ratio > 0: a point of its own
        suffix += f" replay={settings['replay_ratio']:g}"
    if settings.get("hops", 1) > 1:  # retriever.hops=2: its own arm beside one-hop retrieval
        suffix += f" hops={settings['hops']}"
    return _base_label(agg) + suffix


def _base_label(agg: Aggregate) -> str:
    if agg.method in _NEW:
        return _NEW[agg.method]
    if agg.method in ("base", "rag"):
        return {"base": "Base", "rag": "RAG"}[agg.method]
    if agg.augment_source == "entigraph":
        name = "FT-EntiGraph"
    else:
        name = "FT-par" if agg.paraphrases else "FT-reg"
    return name + ("+RAG" if agg.method == "ft_rag" else "")


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _interval(text: str, ci: tuple[float, float] | None) -> str:
    return text if ci is None else f"{text}±{(ci[1] - ci[0]) / 2:.3f}"


def _forgetting(agg: Aggregate) -> tuple[str, dict[str, object]]:
    values = [c.forgetting for c in agg.cells]
    mean = _mean(values)
    if mean is None:
        return MISSING, {}
    # One seed: the paired bootstrap interval over control questions; several: their spread is
    # left to the CSV (per cell) and the mean shown.
    ci = agg.cells[0].forgetting_ci95 if len(agg.cells) == 1 else None
    record = {"forgetting": round(mean, 6)}
    if ci is not None:
        record |= {"forgetting_ci95_low": ci[0], "forgetting_ci95_high": ci[1]}
    return _interval(f"{mean:+.3f}", ci), record


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
        scored = agg.probe(family)
        if scored is None:
            texts.append(MISSING)
            continue
        mean, ci = scored
        texts.append(_interval(f"{mean:.3f}", ci))
        record[f"acc_{family}"] = round(mean, 6)
        if ci is not None:
            record[f"acc_{family}_ci95_low"] = round(ci[0], 6)
            record[f"acc_{family}_ci95_high"] = round(ci[1], 6)
    return texts, record


def correct_answers(folder: Path, family: str | None = None) -> dict[str, bool] | None:
    """Question id -> answered correctly, from the cell's predictions.jsonl: the direct
    questions (records without a ``family``), or one probe family's."""
    try:
        lines = (folder / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
        records = [r for r in map(json.loads, lines) if r and r.get("family") == family]
        return {r["id"]: bool(r["correct"]) for r in records}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


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
    """McNemar on paired questions against FT-reg of the same model, task, shots and seed."""
    reference = [
        a
        for a in aggs
        if arm_label(a) == "FT-reg"
        and (a.model, a.task, a.shots) == (agg.model, agg.task, agg.shots)
    ]
    if not reference or agg in reference or agg.method == "base":
        return MISSING, {}
    by_seed = {c.seed: c for c in reference[0].cells}
    cell = next((c for c in agg.cells if c.seed in by_seed), None)
    if cell is None:
        return MISSING, {}
    arm, ref = correct_answers(cell.path), correct_answers(by_seed[cell.seed].path)
    if arm is None or ref is None:
        return MISSING, {}
    lost, gained, p = mcnemar(arm, ref)
    text = f"{gained}/{lost}, p={p:.2g}"
    return text, {"vs_ft_reg_gained": gained, "vs_ft_reg_lost": lost, "vs_ft_reg_p": p}


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
    ordered = sorted(
        aggs,
        key=lambda a: (
            a.model,
            a.task,
            a.shots,
            _ORDER.index(_base_label(a)),
            a.k or 0,
            arm_label(a),
            -a.mean,
        ),
    )
    for agg in ordered:
        arm = arm_label(agg)
        acc = _interval(f"{agg.mean:.3f}", agg.ci95)
        forgetting, forgetting_record = _forgetting(agg)
        categories, category_record = _categories(agg)
        tokens = _mean([c.train_tokens for c in agg.cells])
        wall = _mean([c.train_wall_s for c in agg.cells])
        retrieval = f"K={agg.k}" if agg.cells[0].retrieve else "closed-book"
        versus, versus_record = _versus_ft_reg(agg, aggs)
        probes, probe_record = _probe_columns(agg, families)
        rows.append(
            [
                model_label(agg.model), agg.task, arm, retrieval, acc, *probes,
                str(agg.seeds), versus, forgetting, *categories,
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
                "ci_over": agg.ci_over, "seeds": agg.seeds, **probe_record, **versus_record,
                **forgetting_record,
                **category_record, "train_tokens": tokens, "train_wall_s": wall,
                "folders": " ".join(str(c.path) for c in agg.cells),
            }
        )  # fmt: skip
    header = ["Model", "Task", "Arm", "Answers", "Acc", *(f"Acc {f}" for f in families)]
    header += ["Seeds", "vs FT-reg", "Forgetting"]
    header += [f"Acc {c}" for c in CATEGORIES] + ["Train tokens", "Train s"]
    notes = [
        "Acc: mean over seeds ± half its 95% interval (one seed: bootstrap over questions); "
        "Acc <family>: the same on a probe family's questions (forms never trained on). "
        "vs FT-reg: questions gained/lost against FT-reg of the same seed, exact McNemar p. "
        "Forgetting: base accuracy on the control set of known facts minus the arm's (paired "
        "95% interval). Acc by SliCK category of the base model's knowledge of each question "
        "(Gekhman et al. 2024); n = questions in it."
    ]
    return Table("arms", "Knowledge-injection arms and their cost", header, rows, records, notes)

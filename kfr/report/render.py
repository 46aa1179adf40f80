"""How a table is written: the text of each position, its CSV record, and the markdown table.

A filled position reads ``mean±half-width`` (``mean [low, high]`` where the interval is lopsided,
at 0 or 1: :func:`kfr.report.intervals.interval_text`), then ``K=<k>`` for methods that retrieve,
``s=<n>`` (``<training seeds>x<knowledge bases>``) when it has fewer seeds than other positions,
the relative gain over Base and the paper's value; an empty one reads "—" (never run) or FAILED /
NO RESULT (tried). :func:`legend` says so in
report.md. The layouts that decide what goes where are in :mod:`kfr.report.layouts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kfr.report.aggregates import Picked
from kfr.report.intervals import interval_text

MISSING = "—"
METHOD_LABELS = {"base": "Base", "rag": "Base+RAG", "ft": "FT", "ft_rag": "FT+RAG"}
MODEL_LABELS = {"mistral_7b": "Mistral-7B", "llama2_7b": "Llama2-7B", "orca2_7b": "Orca2-7B"}


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


@dataclass
class Table:
    name: str  # file name stem of its CSV
    title: str
    header: list[str]
    rows: list[list[str]]
    records: list[dict[str, object]]  # one per filled or missing position, for CSV
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines)


def format_position(
    picked: Picked | None,
    base: Picked | None,
    paper: float | None,
    max_seeds: int,
    *,
    show_k: bool = True,
    absent: str = MISSING,
) -> str:
    """The text of one table position (``absent`` when nothing fills it)."""
    if picked is None:
        return f"{absent} [paper {paper:.3f}]" if paper is not None else absent
    agg = picked.agg
    est = agg.estimate()
    text = interval_text(agg.mean, agg.ci95, lopsided=est is not None and not est.fallback)
    if show_k and agg.k is not None and agg.method in ("rag", "ft_rag"):
        text += f" K={agg.k}"
    if agg.seeds != max_seeds:
        text += f" s={agg.seeds_label}"
    if base is not None and agg is not base.agg and base.agg.mean > 0:
        text += f" ({(agg.mean - base.agg.mean) / base.agg.mean:+.1%})"
    if paper is not None:
        text += f" [paper {paper:.3f}]"
    return text


def position_record(
    table: str,
    position: dict[str, object],
    picked: Picked | None,
    base: Picked | None,
    paper: float | None,
    absent: str = "missing",
) -> dict[str, object]:
    """The CSV row of one table position: its numbers, seeds, gain and the folders behind it."""
    record: dict[str, object] = {"table": table, **position, "paper": paper}
    if picked is None:
        return record | {"status": absent}
    agg = picked.agg
    ci = agg.ci95
    gain = None
    if base is not None and agg is not base.agg and base.agg.mean > 0:
        gain = round((agg.mean - base.agg.mean) / base.agg.mean, 6)
    return record | {
        "status": "ok",
        "acc_mean": round(agg.mean, 6),
        "ci95_low": None if ci is None else round(ci[0], 6),
        "ci95_high": None if ci is None else round(ci[1], 6),
        "ci_over": agg.ci_over,
        "seeds": agg.seeds,
        "train_seeds": agg.train_seeds,
        "kb_seeds": agg.kb_seeds,
        "k": agg.k,
        "paraphrases": agg.paraphrases,
        "relative_gain": gain,
        "candidates": picked.candidates,
        "data_cards": " ".join(sorted(agg.cards)),
        "folders": " ".join(str(c.path) for c in agg.cells),
    }


def legend() -> str:
    return (
        "Each cell: accuracy, the mean over its cells (training seeds, and knowledge bases where "
        "their seed varied) ± the half-width of its 95% interval, or [low, high] where the "
        "interval is lopsided (one side over 1.5 times the other, as at 0 or 1). Intervals: a "
        "two-level bootstrap over knowledge bases, training seeds and questions (the same "
        "question resample for every cell of a knowledge base); the exact binomial interval "
        "where every answer is right or every one wrong; cells without per-question records "
        "(older kfr): Student t over seeds, or the cell's own bootstrap with one seed (each "
        "table says which). K = retrieved chunks (the best K is shown, as in the paper); s = "
        "seeds (training x knowledge bases), where fewer than in other cells; (relative gain "
        f"over Base); [the paper's value]. {MISSING} = never run; FAILED / NO RESULT = tried, "
        "listed under 'Missing and failed cells'."
    )

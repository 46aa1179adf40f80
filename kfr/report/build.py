"""The comparison report: tables, the cells behind them, what is missing, and the plots.

``write_report`` writes into one folder: ``report.md`` (every table with a line saying what its
intervals cover, missing, failed and unreadable cells, data versions, a few replay texts of the
arms that trained with replay), ``cells.csv`` (one row per finished cell), one CSV per table,
and the PNG plots (among them accuracy, direct and per probe family, against forgetting:
``acc_vs_forgetting.png``).
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from kfr.cell.folder import format_failures
from kfr.core.storage import atomic_write_text
from kfr.report.aggregates import Aggregate, aggregate
from kfr.report.arms import arm_label, arms_table
from kfr.report.collect import Collected, collect
from kfr.report.diagnostics import probe_details_table
from kfr.report.layouts import curve_table, methods_table, paraphrase_tables
from kfr.report.paper import PAPER
from kfr.report.plots import plot_curves, plot_frontier, plot_tokens
from kfr.report.probes import probes_table
from kfr.report.render import Table, legend

REPORT_FILE = "report.md"
CELLS_FILE = "cells.csv"
REPLAY_SAMPLES, REPLAY_CHARS, REPLAY_ARMS = 3, 240, 12  # replay texts shown: per arm, length


@dataclass
class Report:
    collected: Collected
    aggregates: list[Aggregate]
    tables: list[Table]
    plots: list[Path] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [
            m
            for t in self.tables
            if t.name == "methods" or t.name.startswith("para")
            for m in t.missing
        ]

    def problems(self) -> list[str]:
        """Markdown lines naming every failed, unfinished, unreadable and missing cell."""
        c = self.collected
        # Every failed cell by name (examples unlimited); the console summary groups them.
        lines = format_failures([*c.failed, *c.incomplete], bullet="- ", examples=10**9)
        damaged = {"unreadable": "is damaged (not valid JSON)"}
        lines += [
            f"- UNREADABLE {f.label}: results.json {damaged.get(f.status, 'is not a kfr result')}"
            f" (`{f.path / 'results.json'}`)"
            for f in c.unreadable
        ]
        lines += [f"- MISSING {m}: no cell with results" for m in dict.fromkeys(self.missing)]
        return lines

    def data_versions(self) -> list[str]:
        """Which dataset card (version) each task's cells used."""
        by_task: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for cell in self.collected.cells:
            key = f"{cell.card} (sha256 {cell.card_digest})" if cell.card else "no dataset card"
            by_task[cell.task][key].append(cell.path.name)
        lines = []
        for task in sorted(by_task):
            versions = by_task[task]
            # Generated sets that differ only by their seed are knowledge bases of one version
            # (data.novel_facts.seed, a sweep axis): not mixed versions.
            kinds = {_card_without_seed(key.partition(" (sha256")[0]) for key in versions}
            flag = (
                " — MIXED: cells of this task used different data versions"
                if len(kinds) > 1
                else f" ({len(versions)} knowledge bases)"
                if len(versions) > 1
                else ""
            )
            lines.append(f"- {task}{flag}")
            for key, folders in sorted(versions.items()):
                lines.append(f"  - {key}: {len(folders)} cell(s)")
        return lines

    def replay_samples(self) -> list[str]:
        """A few texts each arm that trained with replay mixed in (its first cell's), one line
        each and cut at :data:`REPLAY_CHARS` characters."""
        lines: list[str] = []
        seen: set[tuple] = set()
        for agg in self.aggregates:
            cell = next((c for c in agg.cells if c.replay_samples), None)
            key = (agg.model, agg.task, arm_label(agg))
            if cell is None or key in seen or len(seen) >= REPLAY_ARMS:
                continue
            seen.add(key)
            lines.append(f"- {' '.join(key)} (`{cell.path.name}`):")
            for text in cell.replay_samples[:REPLAY_SAMPLES]:
                flat = " ".join(text.split())
                cut = flat if len(flat) <= REPLAY_CHARS else flat[: REPLAY_CHARS - 1] + "…"
                lines.append(f"  - {cut}")
        return lines

    def markdown(self) -> str:
        c = self.collected
        train = max((a.train_seeds for a in self.aggregates), default=0)
        kbs = max((a.kb_seeds for a in self.aggregates), default=0)
        seeds = f"{train} training seeds x {kbs} knowledge bases" if kbs > 1 else f"{train} seeds"
        out = [
            "## kfr report",
            "",
            f"Sources: {', '.join(f'`{r}`' for r in c.roots)}. Cells with results: "
            f"{len(c.cells)} ({len(self.aggregates)} settings x up to {seeds}); "
            f"failed: {len(c.failed)}; without a result: {len(c.incomplete)}; "
            f"unreadable: {len(c.unreadable)}. Published values: {PAPER}.",
            "",
            legend(),
        ]
        for table in self.tables:
            out += ["", table.markdown()]
        problems = self.problems()
        out += ["", "### Missing and failed cells", ""]
        out += problems or ["None: every position of every table has results."]
        out += ["", "### Data versions", "", *self.data_versions()]
        if replay := self.replay_samples():
            out += ["", "### Replay samples (texts mixed into training)", "", *replay]
        if self.plots:
            out += ["", "### Plots", "", *[f"- `{p}`" for p in self.plots]]
        return "\n".join(out) + "\n"


def build_report(roots: list[str | Path]) -> Report:
    collected = collect(roots)
    aggs = aggregate(collected.cells)
    tables: list[Table] = []
    attempts = collected.attempts
    if aggs or attempts:
        if (table := methods_table(aggs, attempts)) is not None:
            tables.append(table)
        tables += paraphrase_tables(aggs, attempts)
    if aggs and (table := arms_table(aggs)) is not None:
        tables.append(table)
    if aggs and (table := probes_table(aggs)) is not None:
        tables.append(table)
    if aggs and (table := probe_details_table(aggs)) is not None:
        tables.append(table)
    if aggs:
        for axis in ("paraphrases", "k"):
            if (table := curve_table(aggs, axis)) is not None:
                tables.append(table)
    return Report(collected, aggs, tables)


def _csv_text(records: list[dict[str, object]]) -> str:
    columns = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _cell_records(report: Report) -> list[dict[str, object]]:
    rows = []
    for cell in report.collected.cells:
        rows.append(
            {
                "folder": str(cell.path),
                "model": cell.model,
                "data": cell.data,
                "task": cell.task,
                "shots": cell.shots,
                "style": cell.style,
                "method": cell.method,
                "seed": cell.seed,
                "kb_seed": cell.kb_seed,
                "k": cell.k,
                "paraphrases": cell.paraphrases,
                "acc": cell.acc,
                "acc_ci95_low": cell.acc_ci95[0] if cell.acc_ci95 else None,
                "acc_ci95_high": cell.acc_ci95[1] if cell.acc_ci95 else None,
                "acc_norm": cell.acc_norm,
                "recall_at_k": cell.recall_at_k,
                "n": cell.n,
                "variant": cell.variant,
                "data_card": cell.card,
                "data_card_sha256": cell.card_digest,
                **{k if k == "hops" else f"finetune_{k}": v for k, v in cell.settings.items()},
                "acc_pmi": cell.metrics.get("acc_pmi"),
                "forgetting": cell.forgetting,
                "control_logp_change": cell.metrics.get("control_logp_change"),
                "control_kl": cell.metrics.get("control_kl"),
                **{f"acc_{family}": m.get("acc") for family, m in cell.probes.items()},
            }
        )
    for folder in report.collected.failed + report.collected.incomplete:
        rows.append(
            {
                "folder": str(folder.path),
                "status": folder.status,
                "error": (folder.failure or {}).get("message"),
            }
        )
    return rows


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write report.md, cells.csv, one CSV per table and the plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.plots = [
        p
        for axis in ("paraphrases", "k")
        if (p := plot_curves(report.aggregates, axis, out)) is not None
    ]
    for plot in (plot_tokens, plot_frontier):
        if (p := plot(report.aggregates, out)) is not None:
            report.plots.append(p)
    for table in report.tables:
        atomic_write_text(out / f"{table.name}.csv", _csv_text(table.records))
    atomic_write_text(out / CELLS_FILE, _csv_text(_cell_records(report)))
    atomic_write_text(out / REPORT_FILE, report.markdown())
    return out


def _card_without_seed(card: str) -> str:
    """A generated set's card reduced to what is not its seed (its generator, version and the
    rest of its spec); any other card as it is."""
    try:
        record = json.loads(Path(card).read_text(encoding="utf-8"))
        spec = {k: v for k, v in dict(record["spec"]).items() if k != "seed"}
        return json.dumps([record["generator"], record["version"], spec], sort_keys=True)
    except (OSError, ValueError, KeyError, TypeError):
        return card

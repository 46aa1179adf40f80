"""What the scaling benchmark's figures say: growth with the knowledge base, and the tables.

Per stage and time measure, the log-log slope of time against the knowledge base's tokens
between consecutive sizes and fitted over all sizes (1.0 = linear), the marginal and fixed parts
of a linear fit, a verdict; then the Markdown tables and verdict lines the benchmark prints.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from benchmarks.scaling_stages import STAGES, Row

LINEAR_LOW, LINEAR_HIGH = 0.9, 1.1  # a log-log slope in this range counts as linear


# ----------------------------------------------------------------------------- growth


def slope(x1: float, t1: float, x2: float, t2: float) -> float:
    """d log t / d log x between two points; NaN where undefined."""
    if min(x1, x2, t1, t2) <= 0 or x1 == x2:
        return math.nan
    return math.log(t2 / t1) / math.log(x2 / x1)


def fitted_slope(xs: Sequence[float], ts: Sequence[float]) -> float:
    """Least-squares slope of log t against log x; NaN with fewer than two distinct x."""
    points = [(math.log(x), math.log(t)) for x, t in zip(xs, ts, strict=True) if x > 0 and t > 0]
    if len(points) < len(xs) or len({p[0] for p in points}) < 2:
        return math.nan
    mx = sum(p[0] for p in points) / len(points)
    mt = sum(p[1] for p in points) / len(points)
    return sum((x - mx) * (t - mt) for x, t in points) / sum((x - mx) ** 2 for x, _ in points)


def linear_fit(xs: Sequence[float], ts: Sequence[float]) -> tuple[float, float]:
    """(a, b) of t = a + b x by least squares; NaNs with fewer than two distinct x."""
    if len(set(xs)) < 2:
        return math.nan, math.nan
    mx, mt = sum(xs) / len(xs), sum(ts) / len(ts)
    b = sum((x - mx) * (t - mt) for x, t in zip(xs, ts, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return mt - b * mx, b


def verdict(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if value < LINEAR_LOW:
        return "sub-linear"
    if value > LINEAR_HIGH:
        return "super-linear"
    return "linear"


MEASURES = (
    ("wall", lambda r: r.wall_s),
    ("CPU", lambda r: r.cpu_s),
    ("kfr", lambda r: r.work_s),
)


def _clean(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def growth(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per stage and time measure: log-log slopes between consecutive sizes, the fitted slope
    and its verdict; the marginal seconds per million KB tokens between consecutive sizes (flat
    when the time is linear with a fixed part, rising when super-linear); and the fixed and
    per-million-token seconds of a linear fit over all sizes."""
    out = []
    for stage in STAGES:
        mine = sorted((r for r in rows if r.stage == stage), key=lambda r: r.size)
        measures = list(MEASURES)
        if stage == "rag":  # the part of a RAG cell that reads the knowledge base
            measures.append(("KB part", lambda r: r.details["kb_part_s"]))
        for name, get in measures:
            xs, ts = [r.kb_tokens for r in mine], [get(r) for r in mine]
            between = {
                f"{a.size}→{b.size}": _clean(slope(a.kb_tokens, get(a), b.kb_tokens, get(b)), 3)
                for a, b in itertools.pairwise(mine)
            }
            marginal = {
                f"{a.size}→{b.size}": _clean(
                    (get(b) - get(a)) / (b.kb_tokens - a.kb_tokens) * 1e6
                    if b.kb_tokens != a.kb_tokens
                    else math.nan,
                    2,
                )
                for a, b in itertools.pairwise(mine)
            }
            fit = fitted_slope(xs, ts)
            fixed, per_token = linear_fit(xs, ts)
            out.append(
                {
                    "stage": stage,
                    "measure": name,
                    "slopes": between,
                    "fit_slope": _clean(fit, 3),
                    "verdict": verdict(fit),
                    "marginal_s_per_mtok": marginal,
                    "fixed_s": _clean(fixed, 2),
                    "s_per_mtok": _clean(per_token * 1e6, 2),
                }
            )
    return out


# ----------------------------------------------------------------------------- output


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def stage_table(rows: Sequence[Row]) -> str:
    lines = [
        "| size | stage | docs | KB tokens | tokens | tokens are | wall s | CPU s | "
        "peak RSS MiB | kfr s |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size} | {r.stage} | {r.docs} | {r.kb_tokens} | {r.tokens} | {r.tokens_kind} "
            f"| {r.wall_s:.2f} | {r.cpu_s:.2f} | {r.peak_rss_mib:.1f} | {r.work_s:.2f} |"
        )
    return "\n".join(lines)


def growth_table(entries: Sequence[dict[str, Any]]) -> str:
    intervals = list(entries[0]["slopes"]) if entries else []
    head = ["stage", "time", *[f"slope {i}" for i in intervals], "fitted slope", "verdict"]
    head += [f"s per 1M KB tokens {i}" for i in intervals] + ["fixed s (linear fit)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for e in entries:
        cells = [e["stage"], e["measure"], *[_num(e["slopes"][i]) for i in intervals]]
        cells += [_num(e["fit_slope"]), e["verdict"]]
        cells += [_num(e["marginal_s_per_mtok"][i]) for i in intervals] + [_num(e["fixed_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_tables(rows: Sequence[Row]) -> str:
    rag = [r for r in rows if r.stage == "rag"]
    ft = [r for r in rows if r.stage == "ft"]
    lines = [
        "| size | questions | K | chunks | data s | load encoder s | KB part s | search s "
        "| load model s | score s | recall@1 | acc |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rag:
        d = r.details
        d_t = d["retrieval_timings"]
        lines.append(
            f"| {r.size} | {d['questions']} | {d['k']} | {d['chunks']} | "
            f"{d['data_s']:.2f} | {d_t['load_encoder_s']:.2f} | {d['kb_part_s']:.2f} | "
            f"{d_t['search_s']:.3f} | "
            f"{d['load_model_s']:.2f} | {d['score_s']:.2f} | "
            f"{_num(d['recall_at_1'], 3)} | {d['acc']:.3f} |"
        )
    lines += [
        "",
        "| size | FT model | docs | blocks | steps | tokens trained | train s | tokens/s | "
        "loss first → last |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in ft:
        d = r.details
        lines.append(
            f"| {r.size} | {d['model']} | {r.docs} | {d['blocks']} | {d['steps']} | {r.tokens} "
            f"| {r.work_s:.2f} | {d['tokens_per_s']:.1f} | "
            f"{_num(d['loss_first'], 3)} → {_num(d['loss_last'], 3)} |"
        )
    return "\n".join(lines)


def verdict_lines(entries: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for stage in STAGES:
        mine = {e["measure"]: e for e in entries if e["stage"] == stage}
        work, cpu, wall = mine["kfr"], mine["CPU"], mine["wall"]
        line = (
            f"- {stage}: {work['verdict']} in KB tokens (kfr's own time, fitted slope "
            f"{_num(work['fit_slope'])}); process CPU {cpu['verdict']} (slope "
            f"{_num(cpu['fit_slope'])}); process wall {wall['verdict']} (slope "
            f"{_num(wall['fit_slope'])}, fixed part {_num(wall['fixed_s'], 1)} s)"
        )
        if "KB part" in mine:
            part = mine["KB part"]
            line += f"; its KB part {part['verdict']} (slope {_num(part['fit_slope'])})"
        lines.append(line)
    return lines

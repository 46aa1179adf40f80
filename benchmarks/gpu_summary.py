"""The GPU check's summary: its Markdown table, pytest's counts, a failed step's error line.

Pure functions of the report :mod:`benchmarks.gpu_check` writes as JSON, so the tests can check
them without running anything.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def exit_code(statuses: Iterable[str], install: dict) -> int:
    """0 when every step passed or was skipped (with its reason), else 1."""
    failed = install.get("status") == "failed" or any(s == "failed" for s in statuses)
    return 1 if failed else 0


def last_error_line(text: str) -> str:
    """The line that says what went wrong: a traceback's last line, kfr's one-line error, or
    else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("# ")]
    for pattern in (r"^[\w.]*(Error|Exception|Interrupt)\b", r"^kfr: error: ", r"(?i)\berror\b"):
        for line in reversed(lines):
            if re.search(pattern, line):
                return line[:300]
    return lines[-1][:300] if lines else ""


def junit_counts(path: Path) -> dict[str, int]:
    try:
        cases = list(ET.parse(path).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        return {}
    kinds = [
        next((k for k in ("failure", "error", "skipped") if case.find(k) is not None), "passed")
        for case in cases
    ]
    return {
        "tests": len(kinds),
        "passed": kinds.count("passed"),
        "failed": kinds.count("failure"),
        "errors": kinds.count("error"),
        "skipped": kinds.count("skipped"),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


ENV_KEYS = ("gpu", "gpu_memory_gib", "driver", "python", "torch", "torch_cuda", "transformers")
ENV_KEYS += ("lightning", "peft", "sentence-transformers", "bitsandbytes", "bitsandbytes_library")
ENV_KEYS += ("bitsandbytes_cuda", "faiss-cpu", "faiss_gpus", "hydra-core", "omegaconf")
COLUMNS = ("acc", "questions_per_s", "finetune.tokens_per_s", "timings.load_model_s")
COLUMNS += ("timings.score_s", "timings.total_s")


def markdown(report: dict) -> str:
    env = report["environment"]
    mode = "dry run on the CPU (tiny settings)" if report["dry_run"] else "GPU"
    lines = [
        f"# kfr GPU check: {mode}",
        "",
        f"Started {report['started']}; {report['duration_s']} s of a {report['budget_s']} s "
        f"budget; exit code {_cell(report['exit_code']) or 'none yet (incomplete)'}; "
        f"up to {report['jobs']} steps at a time, at most {report['peak_jobs']} ran at once "
        "(a cell's speed figures are taken with the others running beside it).",
        "",
        *(f"- {note}" for note in report["notes"]),
        f"- bundle install: {report['install']['status']} ({report['install']['duration_s']} s)"
        f" {_cell(report['install']['note'])}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {_cell(env[k])} |" for k in ENV_KEYS if env.get(k) is not None),
        "",
        "| step | status | start s | s | box s | " + " | ".join(COLUMNS) + " | reason |",
        "|---|---|---:|---:|---:|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for s in report["steps"]:
        start = "" if s.get("started_s") is None else f"{s['started_s']:.1f}"
        row = [s["name"], s["status"], start, f"{s['duration_s']:.1f}", f"{s['time_box_s']:.0f}"]
        row += [_cell(s["figures"].get(c)) for c in COLUMNS] + [_cell(s["reason"])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Every figure and command", ""]
    for s in report["steps"]:
        shown = {**s["figures"], **s["details"]}
        lines.append(
            f"- **{s['name']}**: " + ", ".join(f"{k} {_cell(v)}" for k, v in shown.items())
        )
        if s["command"]:
            lines.append(f"  `{s['command']}`")
    return "\n".join(lines)

"""benchmarks/scaling.py end to end at tiny sizes: every stage runs as a real kfr command.

Two knowledge-base sizes (20 and 60 documents), 4 questions, tiny_llama for scoring and training,
no warm-up: the stage table has a row per size and stage with positive figures, the growth table
finite slopes, and the --json file holds exactly what the tables print. The knowledge-base
generator and the slope arithmetic are checked on their own first (no processes).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks import scaling
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

SIZES = (20, 60)


def test_people_are_unique_and_each_size_is_a_prefix_of_the_next():
    names = scaling.all_names(0)
    assert len(names) == len(set(names)) == scaling.MAX_DOCS == 20 * 16 * 20 * 16
    small, large = scaling.make_people(10, seed=0), scaling.make_people(30, seed=0)
    assert large.documents[:10] == small.documents
    assert large.questions[:10] == small.questions
    assert len({d.title for d in large.documents}) == 30
    other = scaling.make_people(10, seed=1)
    assert other.documents != small.documents
    # Every question names its person and has its answer among the document's facts.
    for document, questions in zip(large.documents, large.questions, strict=True):
        assert len(questions) == 6
        for question in questions:
            assert question.source_ids == (document.id,)
            assert document.title in question.question
            assert question.choices[question.answer] in document.text


def test_slopes_and_verdicts():
    assert scaling.slope(1e3, 2.0, 1e4, 20.0) == pytest.approx(1.0)
    assert scaling.slope(1e3, 2.0, 1e4, 200.0) == pytest.approx(2.0)
    assert math.isnan(scaling.slope(1e3, 2.0, 1e3, 3.0))
    xs = [1e3, 1e4, 1e5]
    assert scaling.fitted_slope(xs, [x**0.5 for x in xs]) == pytest.approx(0.5)
    assert scaling.linear_fit(xs, [5 + 2 * x for x in xs]) == pytest.approx((5, 2))
    verdicts = [scaling.verdict(v) for v in (0.5, 0.95, 1.05, 1.5, math.nan)]
    assert verdicts == ["sub-linear", "linear", "linear", "super-linear", "n/a"]


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows of the Markdown table right after ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:  # after the header and the separator
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    figures = out / "scaling.json"
    cmd = [
        sys.executable, "-m", "benchmarks.scaling",
        "--sizes", *map(str, SIZES), "--questions", "4",
        "--model", "tiny_llama", "--ft-model", "tiny_llama",
        "--no-warmup", "--work-dir", str(out / "work"), "--json", str(figures),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, json.loads(figures.read_text(encoding="utf-8"))


def test_stage_table_has_a_row_per_size_and_stage(benchmark):
    stdout, _ = benchmark
    rows = _table(stdout, "## Stages")
    assert [(int(r[0]), r[1]) for r in rows] == [
        (size, stage) for size in SIZES for stage in scaling.STAGES
    ]
    for r in rows:
        size, docs, kb_tokens, tokens = int(r[0]), int(r[2]), int(r[3]), int(r[4])
        wall, cpu, rss, work = map(float, r[6:10])
        assert docs == size
        assert kb_tokens > 0 and tokens > 0
        assert wall > 0 and cpu > 0 and work > 0
        assert work < wall  # kfr's own timing is part of the process's
        assert 50 < rss < 16_000  # MiB: a Python process with torch, not bytes or kilobytes
    by = {(int(r[0]), r[1]): r for r in rows}
    # The knowledge base triples: so do its tokens and the embedded and trained tokens ...
    for stage in ("build", "ft"):
        ratio = int(by[60, stage][4]) / int(by[20, stage][4])
        assert 2.5 < ratio < 3.5, (stage, ratio)
    assert 2.5 < int(by[60, "build"][3]) / int(by[20, "build"][3]) < 3.5
    # ... while the same 4 questions score about the same number of tokens.
    assert 0.7 < int(by[60, "rag"][4]) / int(by[20, "rag"][4]) < 1.3


def test_growth_table_slopes_are_finite(benchmark):
    stdout, _ = benchmark
    rows = _table(stdout, "## Growth with the knowledge base")
    measures = [(r[0], r[1]) for r in rows]
    expected = [(s, m) for s in scaling.STAGES for m in ("wall", "CPU", "kfr")]
    expected.insert(expected.index(("rag", "kfr")) + 1, ("rag", "KB part"))
    assert measures == expected
    for r in rows:
        slope, fitted, verdict = float(r[2]), float(r[3]), r[4]
        assert math.isfinite(slope) and math.isfinite(fitted)
        assert slope == pytest.approx(fitted, abs=0.01)  # two sizes: one interval, the fit
        assert verdict == scaling.verdict(fitted)
    assert "- build: " in stdout and "- rag: " in stdout and "- ft: " in stdout


def test_json_holds_what_the_tables_print(benchmark):
    stdout, figures = benchmark
    stage_rows = _table(stdout, "## Stages")
    assert len(figures["rows"]) == len(stage_rows)
    for printed, saved in zip(stage_rows, figures["rows"], strict=True):
        assert [int(printed[0]), printed[1], int(printed[2]), int(printed[3])] == [
            saved["size"], saved["stage"], saved["docs"], saved["kb_tokens"],
        ]  # fmt: skip
        assert int(printed[4]) == saved["tokens"] and printed[5] == saved["tokens_kind"]
        numbers = [float(x) for x in printed[6:10]]
        keys = ("wall_s", "cpu_s", "peak_rss_mib", "work_s")
        assert numbers == pytest.approx([saved[k] for k in keys], abs=0.006)
    growth_rows = _table(stdout, "## Growth with the knowledge base")
    assert len(figures["growth"]) == len(growth_rows)
    for printed, saved in zip(growth_rows, figures["growth"], strict=True):
        assert [printed[0], printed[1], printed[4]] == [
            saved["stage"], saved["measure"], saved["verdict"],
        ]  # fmt: skip
        assert list(saved["slopes"]) == ["20→60"]
        assert float(printed[2]) == pytest.approx(saved["slopes"]["20→60"], abs=0.006)
        assert float(printed[3]) == pytest.approx(saved["fit_slope"], abs=0.006)
        assert float(printed[5]) == pytest.approx(saved["marginal_s_per_mtok"]["20→60"], abs=0.006)
        assert float(printed[6]) == pytest.approx(saved["fixed_s"], abs=0.006)
    rag = [r for r in figures["rows"] if r["stage"] == "rag"]
    for row in rag:
        # The questions are about documents in the knowledge base, found by retrieval.
        assert row["details"]["questions"] == 4 and row["details"]["k"] == 3
        assert row["details"]["recall_at_1"] >= 0.75
    assert figures["settings"]["sizes"] == list(SIZES)

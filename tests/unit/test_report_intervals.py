"""kfr-report's intervals count every source of variance: questions, training seeds and
knowledge bases (two-level bootstrap over per-question records), exact binomial at 0 or 1, paired
differences between arms, knowledge-base seeds as one row, and damaged results named."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from kfr.cell.folder import scan_cells
from kfr.cli.report import main as report_main
from kfr.core.identity import cell_dirname, config_hash, variant_key
from kfr.evaluation.metrics import bootstrap_interval, exact_binomial_interval
from kfr.report import build_report, write_report
from kfr.report.aggregates import aggregate
from kfr.report.collect import collect
from kfr.report.intervals import difference, estimate, interval_text
from kfr.report.stats import two_level
from tests.conftest import compose_config
from tests.unit.test_report import _config


def _cell(
    root: Path,
    correct: list[bool],
    *,
    method: str = "base",
    seed: int = 0,
    kb: int = 0,
    k: int | None = None,
    probes: dict[str, list[dict]] | None = None,
    pmi: list[bool] | None = None,
    control: list[dict] | None = None,
    replay: list[str] | None = None,
    predictions: bool = True,
) -> Path:
    """A novel_facts cell as kfr.cell writes it: results.json, predictions.jsonl (direct records,
    then probe records with their family) and control.jsonl, question ids per knowledge base."""
    config = _config(method)
    config["model"]["name"] = "tiny_llama"
    config["seed"] = seed
    config["data"]["novel_facts"]["seed"] = kb
    if k is not None:
        config["retriever"]["k"] = k
    folder = root / f"method={method},k={k},seed={seed},kb={kb}"
    folder.mkdir(parents=True)
    correct = [bool(c) for c in correct]
    values = np.array(correct, dtype=float)
    metrics: dict = {
        "n": len(correct),
        "acc": float(values.mean()),
        "acc_ci95": bootstrap_interval(values, samples=1000, seed=0),
        "chance": 0.25,
    }
    records = [
        {"id": f"kb{kb}-q{i}", "correct": c} | ({} if pmi is None else {"correct_pmi": pmi[i]})
        for i, c in enumerate(correct)
    ]
    if pmi is not None:
        metrics["acc_pmi"] = float(np.mean(pmi))
    metrics["probes"] = {}
    for family, rows in (probes or {}).items():
        accs = [float(r["correct"]) for r in rows]
        metrics["probes"][family] = {"n": len(rows), "acc": float(np.mean(accs)), "chance": 0.25}
        records += [
            {"id": f"kb{kb}-{family}{i}", "family": family, **r} for i, r in enumerate(rows)
        ]
    if control is not None:
        lost = [float(r["base_correct"]) - float(r["correct"]) for r in control]
        metrics["forgetting"] = float(np.mean(lost))
        lines = [{"id": f"c{i}", **r} for i, r in enumerate(control)]
        (folder / "control.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    if predictions:
        (folder / "predictions.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    results = {
        "cell": {"experiment": "t", "model": "tiny_llama", "data": "novel_facts",
                 "method": method, "style": "letter", "shots": 0, "seed": seed},
        "metrics": metrics,
        "data": {"questions": "q.jsonl", "card": None},
        "config": config,
        "config_hash": folder.name,
    }  # fmt: skip
    if k is not None:
        results["retrieval"] = {"k": k}
    if replay is not None:
        results["finetune"] = {"tokens": 100, "wall_s": 1.0, "replay": {"samples": replay}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def _half(text: str) -> float:
    return float(text.split("±")[1].split()[0])


def _arms(report) -> dict[str, dict[str, str]]:
    (table,) = [t for t in report.tables if t.name == "arms"]
    return {row[2]: dict(zip(table.header, row, strict=True)) for row in table.rows}


BASE = [True] * 34 + [False] * 86  # 0.283 on 120 questions


def test_identical_seeds_have_the_question_bootstrap_width_not_zero(tmp_path):
    # `kfr -m model=tiny_llama method=base,rag seed=0,1`: Base is deterministic, so both seeds
    # answer alike; Student t over the seeds' means said 0.283±0.000.
    one, two = tmp_path / "one", tmp_path / "two"
    _cell(one, BASE)
    for seed in (0, 1):
        _cell(two, BASE, seed=seed)
        _cell(two, [True] * 60 + [False] * 60, method="rag", k=3, seed=seed)
    markdown = build_report([two]).markdown()
    row = markdown.split("| novel_facts | 0 | ", 1)[1]
    assert row.startswith("0.283±") and not row.startswith("0.283±0.000")
    (single,) = aggregate(collect([one]).cells)
    (base,) = [a for a in aggregate(collect([two]).cells) if a.method == "base"]
    assert base.seeds == 2 and single.seeds == 1
    assert base.ci95 == pytest.approx(single.ci95, abs=1e-12)  # exactly the questions' width
    reference = bootstrap_interval(np.array(BASE, dtype=float), samples=2000, seed=1)
    assert base.ci95[1] - base.ci95[0] == pytest.approx(reference[1] - reference[0], abs=0.015)
    assert _half(row) == pytest.approx((base.ci95[1] - base.ci95[0]) / 2, abs=5e-4)
    assert _half(row) > 0.06
    assert "95% over questions and up to 2 training seed(s) x 1 knowledge base(s)" in markdown


def test_every_answer_right_is_an_exact_binomial_interval_shown_as_it_is(tmp_path):
    for seed in (0, 1):  # RAFT answers 240/240 on both seeds
        _cell(tmp_path, [True] * 240, method="raft", k=1, seed=seed)
    _cell(tmp_path, [False] * 40, method="qa_ft")
    report = build_report([tmp_path])
    raft = _arms(report)["RAFT"]["Acc"]
    assert raft == "1.000 [0.985, 1.000]"  # never ±0.000; distinct questions: 240, not 480
    (agg,) = [a for a in report.aggregates if a.method == "raft"]
    assert agg.ci95 == pytest.approx(tuple(exact_binomial_interval(240, 240)))
    assert agg.ci_over == "exact"
    assert _arms(report)["QA-FT"]["Acc"] == "0.000 [0.000, 0.088]"
    assert interval_text(1.0, (0.985, 1.0)) == "1.000 [0.985, 1.000]"


def test_knowledge_base_seeds_are_one_row_and_widen_the_interval(tmp_path):
    rng = np.random.default_rng(0)
    for kb, p in ((0, 0.3), (1, 0.7), (2, 0.5)):  # three knowledge bases, quite unlike
        answers = list(rng.random(100) < p)
        for seed in (0, 1):
            _cell(tmp_path, answers, method="qa_ft", seed=seed, kb=kb)
    report = build_report([tmp_path])
    (agg,) = report.aggregates
    assert (agg.train_seeds, agg.kb_seeds, agg.seeds_label) == (2, 3, "2x3")
    rows = _arms(report)
    assert list(rows) == ["QA-FT"] and rows["QA-FT"]["Seeds"] == "2x3"
    one_kb = estimate([c for c in agg.cells if c.kb_seed == 0])
    # Resampling knowledge bases adds their spread (means 0.3 / 0.7 / 0.5): far wider.
    assert agg.ci95[1] - agg.ci95[0] > 2 * (one_kb.ci[1] - one_kb.ci[0])
    assert "2 training seed(s) x 3 knowledge base(s)" in report.markdown()


def test_knowledge_base_seed_is_out_of_the_variant_only():
    def derived(*overrides: str) -> tuple[str, str, str]:
        cfg = compose_config(["method=ft", *overrides])
        return variant_key(cfg), config_hash(cfg), cell_dirname(list(overrides), cfg)

    zero, one = derived("data.novel_facts.seed=0"), derived("data.novel_facts.seed=1")
    assert zero[0] == one[0]  # one report row
    assert zero[1] != one[1] and zero[2] != one[2]  # two cells, two folders
    assert derived("data.novel_facts.n_entities=8")[0] != zero[0]


def test_a_truncated_results_json_is_named_unreadable(tmp_path, capsys):
    _cell(tmp_path, BASE)
    damaged = _cell(tmp_path, BASE, seed=1)
    text = (damaged / "results.json").read_text()
    (damaged / "results.json").write_text(text[: len(text) // 2])  # a truncated copy
    (folder,) = [f for f in scan_cells([tmp_path]) if f.path == damaged]
    assert folder.status == "unreadable"
    collected = collect([tmp_path])
    assert [f.path for f in collected.unreadable] == [damaged] and not collected.incomplete
    report_main([str(tmp_path), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert f"- UNREADABLE {damaged.name}: results.json is damaged (not valid JSON)" in printed
    assert "without a result: 0; unreadable: 1" in printed
    assert "started, never finished" not in printed


def test_paired_difference_is_narrower_than_unpaired_for_correlated_arms(tmp_path):
    rng = np.random.default_rng(1)
    reference = rng.random(300) < 0.5
    better = reference | (rng.random(300) < 0.15)  # the same answers, a few more right
    probes_a = {"reversal": [{"correct": bool(c)} for c in better]}
    probes_b = {"reversal": [{"correct": bool(c)} for c in reference]}
    a = [
        _cell(tmp_path / "a", list(better), method="qa_ft", seed=s, probes=probes_a) for s in (0, 1)
    ]
    b = [
        _cell(tmp_path / "b", list(reference), method="ft", seed=s, probes=probes_b) for s in (0, 1)
    ]
    cells = collect([tmp_path]).cells
    arm = [c for c in cells if c.path in a]
    ref = [c for c in cells if c.path in b]
    diff, paired = difference(arm, ref)
    _, unpaired = difference(arm, ref, paired=False)
    assert diff == pytest.approx(better.mean() - reference.mean())
    assert paired[0] > 0  # the gain is real once paired on questions
    assert paired[1] - paired[0] < 0.5 * (unpaired[1] - unpaired[0])
    report = build_report([tmp_path])
    rows = _arms(report)
    versus = rows["QA-FT"]["vs FT-reg"]
    gained = int((better & ~reference).sum())
    assert versus.startswith(f"{gained}/0, p=")
    assert f"Δ{interval_text(diff, paired, signed=True)}" in versus
    # The best arm's margin on a probe family: the same paired interval, on its questions.
    (probes,) = [t for t in report.tables if t.name == "probes"]
    (row,) = probes.rows
    margin = difference(arm, ref, "acc", "reversal")
    assert row[5] == "QA-FT" and row[8] == interval_text(*margin, signed=True)
    assert margin[1][0] > 0


def test_probe_pmi_and_any_diagnostic_get_intervals_and_columns(tmp_path):
    rng = np.random.default_rng(2)
    rows = [
        {
            "correct": bool(rng.random() < 0.4),
            "correct_pmi": bool(rng.random() < 0.6),
            "diagnostics": {
                "lure_rate": bool(rng.random() < 0.3),
                "made_up_metric": None if i % 2 else bool(rng.random() < 0.5),
            },
        }
        for i in range(80)
    ]
    for seed in (0, 1):
        _cell(tmp_path, BASE, pmi=[not c for c in BASE], probes={"two_hop_lure": rows}, seed=seed)
    report = build_report([tmp_path])
    (table,) = [t for t in report.tables if t.name == "probe_details"]
    assert table.header[-4:] == ["Acc", "Acc PMI", "lure_rate", "made_up_metric"]
    (row,) = table.rows
    (agg,) = report.aggregates
    made_up = agg.estimate("made_up_metric", "two_hop_lure")
    counted = [r["diagnostics"]["made_up_metric"] for r in rows[::2]]
    assert made_up.mean == pytest.approx(np.mean(counted))  # the mean over non-null values
    assert row[-1] == interval_text(made_up.mean, made_up.ci) and "±" in row[-1]
    assert row[-3] == interval_text(np.mean([r["correct_pmi"] for r in rows]), _pmi_ci(agg))
    assert _arms(report)["Base"]["Acc PMI"].startswith(f"{1 - 34 / 120:.3f}±")


def _pmi_ci(agg):
    return agg.estimate("acc_pmi", "two_hop_lure").ci


def test_forgetting_log_p_and_kl_come_from_the_control_records(tmp_path):
    rng = np.random.default_rng(3)
    control = [
        {
            "base_correct": True,
            "correct": bool(rng.random() < 0.9),
            "base_logp": -1.0,
            "logp": float(-1.0 - rng.random()),
            "kl": float(rng.random() * 0.2),
        }
        for _ in range(200)
    ]
    _cell(tmp_path, BASE, method="qa_ft", control=control)
    _cell(tmp_path, BASE, method="qa_ft", control=control, seed=1)
    older = _cell(tmp_path / "older", BASE, method="ft", predictions=False)
    results = json.loads((older / "results.json").read_text())
    results["metrics"] |= {"forgetting": 0.02, "forgetting_ci95": [0.01, 0.03]}
    (older / "results.json").write_text(json.dumps(results))
    report = build_report([tmp_path])
    rows = _arms(report)
    (agg,) = [a for a in report.aggregates if a.method == "qa_ft"]
    lost = np.mean([r["base_correct"] - r["correct"] for r in control])
    assert rows["QA-FT"]["Forgetting"].startswith(f"{lost:+.3f}±")
    change = agg.estimate("control_logp_change")
    assert change.mean == pytest.approx(np.mean([r["logp"] - r["base_logp"] for r in control]))
    assert rows["QA-FT"]["Δlog P control"] == interval_text(change.mean, change.ci, signed=True)
    assert rows["QA-FT"]["KL control"].startswith(f"{np.mean([r['kl'] for r in control]):.3f}±")
    # An older cell: results.json's forgetting and its own interval; no control columns.
    assert rows["FT-reg"]["Forgetting"] == "+0.020±0.010"
    assert rows["FT-reg"]["KL control"] == "—"
    assert "from cells without per-question records (older kfr)" in report.markdown()


def test_per_question_records_are_read_only_for_the_intervals_asked(tmp_path):
    for seed in (0, 1):
        _cell(tmp_path, BASE, seed=seed)
    (agg,) = aggregate(collect([tmp_path]).cells)
    assert all(not c._read for c in agg.cells)  # collecting and grouping read none
    assert agg.ci95 is not None
    assert all(("file", "predictions.jsonl") in c._read for c in agg.cells)


def test_replay_samples_are_shown_short(tmp_path):
    texts = ["The river Vell rises in the north.", "x " * 400, "Third.", "Fourth, never shown."]
    _cell(tmp_path, BASE, method="qa_ft", replay=texts)
    out = write_report(build_report([tmp_path]), tmp_path / "out")
    section = (out / "report.md").read_text().split("### Replay samples", 1)[1]
    assert "- The river Vell rises in the north." in section and "Third." in section
    assert "Fourth" not in section and "…" in section
    assert max(len(line) for line in section.splitlines()) < 260


def test_two_level_bootstrap_is_fast_and_reduces_to_the_question_bootstrap():
    rng = np.random.default_rng(4)
    values = (rng.random((1, 1000)) < 0.4).astype(float)
    (low, high) = np.quantile(two_level([[values]])[:, 0], [0.025, 0.975])
    reference = bootstrap_interval(values[0], samples=4000, seed=0)
    assert (low, high) == pytest.approx(tuple(reference), abs=0.01)
    # 50 cells x 1000 questions (10 settings x 5 seeds): all intervals well under a second or so.
    cells = [(rng.random((5, 1000)) < 0.4).astype(float) for _ in range(10)]
    start = time.perf_counter()
    for matrix in cells:
        two_level([[matrix]])
    assert time.perf_counter() - start < 3.0


def test_the_oracle_context_is_a_reference_not_the_best_arm(tmp_path):
    rows = [{"correct": i % 4 != 0, "correct_pmi": True} for i in range(40)]
    base = [{"correct": i % 2 == 0, "correct_pmi": True} for i in range(40)]
    _cell(tmp_path, BASE, probes={"comparison": base})
    _cell(tmp_path, BASE, method="oracle", probes={"comparison": rows})
    report = build_report([tmp_path])
    (best,) = [t for t in report.tables if t.name == "probes"]
    assert [row[5] for row in best.rows] == ["Base"]  # the oracle's 0.750 is not an arm to pick
    (details,) = [t for t in report.tables if t.name == "probe_details"]
    assert {row[2] for row in details.rows} == {"Base", "Oracle context"}
    assert {row[3] for row in details.rows} == {"closed-book", "source documents"}


def test_knowledge_bases_of_one_generator_version_are_not_mixed_versions(tmp_path):
    def card(folder: Path, seed: int, version: int = 3) -> str:
        path = folder / f"card-{seed}-{version}.json"
        spec = {"n_entities": 40, "seed": seed, "n_paraphrases": 8, "version": version}
        path.write_text(json.dumps({"generator": "g", "version": version, "spec": spec}))
        return str(path)

    for kb in (0, 1):
        folder = _cell(tmp_path / "sweep", BASE, kb=kb)
        results = json.loads((folder / "results.json").read_text())
        results["data"]["card"] = card(tmp_path, kb)
        (folder / "results.json").write_text(json.dumps(results))
    lines = build_report([tmp_path / "sweep"]).data_versions()
    assert lines[0] == "- custom:q (2 knowledge bases)" or "(2 knowledge bases)" in lines[0]
    assert "MIXED" not in "\n".join(lines)
    folder = _cell(tmp_path / "sweep", BASE, kb=2, method="rag", k=3)
    results = json.loads((folder / "results.json").read_text())
    results["data"]["card"] = card(tmp_path, 2, version=2)
    (folder / "results.json").write_text(json.dumps(results))
    assert "MIXED" in "\n".join(build_report([tmp_path / "sweep"]).data_versions())

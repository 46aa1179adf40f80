"""kfr-report on results files written here: the paper's layouts, seeds, gains, paper values,
missing and failed cells, data versions, CSV files and plots."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kfr.cli.report import main as report_main
from kfr.report import build_report, write_report
from kfr.report.paper import PAPER_TABLE1, PAPER_TABLE2
from tests.conftest import REPO_ROOT, compose_config

_BASE_CONFIGS: dict[str, dict] = {}


def _config(method: str) -> dict:
    if method not in _BASE_CONFIGS:
        cfg = compose_config([f"method={method}", "model=tiny_llama"])
        _BASE_CONFIGS[method] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return json.loads(json.dumps(_BASE_CONFIGS[method]))


def write_cell(
    root: Path,
    *,
    model: str,
    data: str,
    method: str,
    acc: float,
    seed: int = 0,
    k: int | None = None,
    paraphrases: int = 0,
    shots: int = 0,
    ci: tuple[float, float] | None = None,
    card: str | None = None,
) -> Path:
    """A results.json as kfr.cell writes it (the fields the report reads, a real config)."""
    config = _config(method)
    config["model"]["name"] = model
    config["data"]["name"] = data
    config["seed"] = seed
    config["eval"]["shots"] = shots
    if k is not None:
        config["retriever"]["k"] = k
    config["augment"]["paraphrases"] = paraphrases
    name = f"model={model},data={data},method={method},k={k},p={paraphrases},shots={shots},s={seed}"
    folder = root / name
    folder.mkdir(parents=True)
    results = {
        "cell": {
            "experiment": "t",
            "model": model,
            "data": data,
            "method": method,
            "style": "letter",
            "shots": shots,
            "seed": seed,
        },
        "metrics": {
            "n": 100,
            "acc": acc,
            "acc_ci95": list(ci or (acc - 0.1, acc + 0.1)),
            "acc_norm": acc,
            "chance": 0.25,
            "per_subject": {},
        },
        "data": {"questions": "q.jsonl", "card": card},
        "config": config,
        "config_hash": f"h-{name}",
    }
    if k is not None:
        results["retrieval"] = {"k": k}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def write_failed(root: Path, *, model: str, data: str, method: str, message: str) -> Path:
    folder = root / f"model={model},method={method},failed"
    (folder / ".hydra").mkdir(parents=True)
    config = _config(method)
    config["model"]["name"], config["data"]["name"] = model, data
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    failure = {"error": "UserError", "message": message, "traceback": "..."}
    (folder / "failed.json").write_text(json.dumps(failure))
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    card = root / "anatomy.card.json"
    card.write_text('{"tool": "kfr-mmlu", "version": 1}')
    mmlu = {"model": "mistral_7b", "data": "mmlu_anatomy", "card": str(card)}
    for seed, delta in ((0, 0.0), (1, 0.02)):
        write_cell(root, **mmlu, method="base", acc=0.50 + delta, seed=seed)
        write_cell(root, **mmlu, method="rag", k=1, acc=0.60 + delta, seed=seed)
        write_cell(root, **mmlu, method="rag", k=3, acc=0.70 + delta, seed=seed)
        write_cell(root, **mmlu, method="ft", acc=0.55 + delta, seed=seed)
        write_cell(root, **mmlu, method="ft_rag", k=3, acc=0.65 + delta, seed=seed)
    write_failed(
        root,
        model="llama2_7b",
        data="mmlu_anatomy",
        method="base",
        message="model weights not found",
    )
    ce = {"model": "mistral_7b", "data": "current_events", "ci": (0.3, 0.5)}
    write_cell(root, **ce, method="base", acc=0.40)
    write_cell(root, **ce, method="rag", k=3, acc=0.80)
    write_cell(root, **ce, method="ft", paraphrases=0, acc=0.42)
    write_cell(root, **ce, method="ft", paraphrases=4, acc=0.50)
    write_cell(root, **ce, method="ft_rag", k=3, paraphrases=0, acc=0.78)
    write_cell(root, **ce, method="ft_rag", k=3, paraphrases=4, acc=0.84)
    return root


def _table(markdown: str, title: str) -> list[str]:
    """The rows (header included) of the table under ``### <title>``."""
    section = markdown.split(f"### {title}", 1)[1].split("###", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_methods_table_in_the_paper_layout(sweep):
    markdown = build_report([sweep]).markdown()
    rows = _table(markdown, "Accuracy by method (paper Table 1 layout)")
    assert rows[0] == (
        "| Task | Shots | Mistral-7B Base | Mistral-7B Base+RAG | Mistral-7B FT | Mistral-7B FT+RAG"
        " | Llama2-7B Base | Llama2-7B Base+RAG | Llama2-7B FT | Llama2-7B FT+RAG |"
    )
    # Two seeds 0.02 apart: mean ± t(0.975, 1) * sd / sqrt(2) = ± 12.706 * 0.01 = ± 0.127.
    assert rows[1] == (
        "| anatomy | 0 | 0.510±0.127 [paper 0.556] | 0.710±0.127 K=3 (+39.2%) [paper 0.681] "
        "| 0.560±0.127 (+9.8%) [paper 0.570] | 0.660±0.127 K=3 (+29.4%) [paper 0.659] "
        "| FAILED [paper 0.393] | — [paper 0.489] | — [paper 0.430] | — [paper 0.489] |"
    )
    # One seed here, two elsewhere: "s=1" and the bootstrap interval over questions.
    # FT columns use fine-tuning without paraphrases: 0.42, not 0.50.
    assert rows[2] == (
        "| current_events | 0 | 0.400±0.100 s=1 | 0.800±0.100 K=3 s=1 (+100.0%) "
        "| 0.420±0.100 s=1 (+5.0%) | 0.780±0.100 K=3 s=1 (+95.0%) | — | — | — | — |"
    )


def test_paraphrase_table_in_the_paper_layout_with_published_values(sweep):
    markdown = build_report([sweep]).markdown()
    title = "current_events 0-shot: fine-tuning with paraphrases (paper Table 2 layout)"
    rows = _table(markdown, title)
    assert rows[0] == "| Model | Base | Base+RAG | FT-reg | FT-par | FT-reg+RAG | FT-par+RAG |"
    assert rows[1] == (
        "| Mistral-7B | 0.400±0.100 [paper 0.481] | 0.800±0.100 K=3 (+100.0%) [paper 0.875] "
        "| 0.420±0.100 (+5.0%) [paper 0.504] | 0.500±0.100 (+25.0%) [paper 0.588] "
        "| 0.780±0.100 K=3 (+95.0%) [paper 0.810] | 0.840±0.100 K=3 (+110.0%) [paper 0.830] |"
    )
    assert "FT-par: 4 paraphrases per document" in markdown


def test_curves_missing_failed_and_data_versions_are_named(sweep):
    report = build_report([sweep])
    markdown = report.markdown()
    by_k = _table(markdown, "Accuracy vs K")
    assert by_k[0] == "| Model | Task | Shots | Method | K=1 | K=3 |"
    assert by_k[1].startswith("| Mistral-7B | anatomy | 0 | Base+RAG | 0.610±0.127 | 0.710±0.127")
    by_p = _table(markdown, "Accuracy vs paraphrase count")
    assert by_p[0] == "| Model | Task | Shots | Method | paraphrases=0 | paraphrases=4 |"
    problems = markdown.split("### Missing and failed cells", 1)[1].split("###", 1)[0]
    assert "- FAILED model=llama2_7b,method=base,failed: UserError: model weights not found" in (
        problems
    )
    for column in ("Base+RAG", "FT", "FT+RAG"):
        assert f"- MISSING llama2_7b anatomy 0-shot {column}: no cell with results" in problems
    versions = markdown.split("### Data versions", 1)[1]
    assert re.search(
        r"- anatomy\n  - .*anatomy\.card\.json \(sha256 [0-9a-f]{12}\): 10 cell", versions
    )
    assert "- current_events\n  - no dataset card: 6 cell(s)" in versions


def test_report_files_csv_and_plots(sweep, tmp_path, capsys):
    report_main([str(sweep), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "### Accuracy by method (paper Table 1 layout)" in printed
    out = tmp_path / "out"
    for name in ("report.md", "cells.csv", "methods.csv", "by_k.csv", "by_paraphrases.csv"):
        assert (out / name).is_file(), name
    for png in ("acc_vs_paraphrases.png", "acc_vs_k.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "methods.csv").open()))
    rag = next(
        r
        for r in rows
        if r["model"] == "mistral_7b" and r["method"] == "rag" and r["task"] == "anatomy"
    )
    assert rag["status"] == "ok" and rag["k"] == "3" and rag["seeds"] == "2"
    assert float(rag["acc_mean"]) == pytest.approx(0.71) and float(rag["paper"]) == 0.681
    assert float(rag["relative_gain"]) == pytest.approx(0.2 / 0.51, abs=1e-6)
    assert float(rag["ci95_low"]) == pytest.approx(0.71 - 0.127062, abs=1e-5)
    failed = next(r for r in rows if r["model"] == "llama2_7b" and r["method"] == "base")
    assert failed["status"] == "FAILED"
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert len([c for c in cells if c.get("acc")]) == 16
    assert any(c.get("status") == "failed" for c in cells)


def test_report_of_a_folder_without_cells_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no kfr cells" in capsys.readouterr().err


def test_published_numbers_are_the_papers():
    assert len(PAPER_TABLE1) == 3 * 5 * 2 * 4 and len(PAPER_TABLE2) == 3 * 6
    assert PAPER_TABLE1[("mistral_7b", "anatomy", 0, "rag")] == 0.681
    assert PAPER_TABLE1[("orca2_7b", "prehistory", 5, "ft_rag")] == 0.694
    assert PAPER_TABLE2[("llama2_7b", "ft_reg")] == 0.219
    # Headline finding 1: mean relative gain over base on MMLU, RAG +12.0%, FT +3.3%, FT+RAG +10.5%
    # (the mean of per-row gains, over the 30 model x subject x shots rows).
    rows = {(m, s, n) for (m, s, n, _) in PAPER_TABLE1}
    for method, published in (("rag", 0.120), ("ft", 0.033), ("ft_rag", 0.105)):
        gains = [PAPER_TABLE1[(*r, method)] / PAPER_TABLE1[(*r, "base")] - 1 for r in rows]
        assert sum(gains) / len(gains) == pytest.approx(published, abs=0.0015)


def test_published_numbers_match_paper_md_when_present():
    paper_md = next(
        (
            p
            for p in (REPO_ROOT.parent / "shared" / "PAPER.md", Path("/work/shared/PAPER.md"))
            if p.is_file()
        ),
        None,
    )
    if paper_md is None:
        pytest.skip("shared/PAPER.md not beside the repository")
    text = paper_md.read_text()
    models = ("mistral_7b", "llama2_7b", "orca2_7b")
    checked = 0
    for match in re.finditer(r"^\| (\w+) (\d)-shot \| (.+?) \| (.+?) \| (.+?) \|$", text, re.M):
        subject, shots = match.group(1), int(match.group(2))
        for model, cell in zip(models, match.groups()[2:], strict=True):
            for method, value in zip(("base", "rag", "ft", "ft_rag"), cell.split("/"), strict=True):
                assert PAPER_TABLE1[(model, subject, shots, method)] == float(value)
                checked += 1
    assert checked == 120


def _predictions(folder: Path, correct: list[bool]) -> None:
    lines = [json.dumps({"id": f"q{i}", "correct": c}) for i, c in enumerate(correct)]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_arms_table_shows_every_arm_with_forgetting_categories_and_mcnemar(tmp_path):
    common = {"model": "smollm2_135m", "data": "novel_facts"}
    write_cell(tmp_path, **common, method="base", acc=0.25)
    reg = write_cell(tmp_path, **common, method="ft", acc=0.36)
    qa = write_cell(tmp_path, **common, method="qa_ft", acc=0.90)
    write_cell(tmp_path, **common, method="raft", k=1, acc=0.95)
    _predictions(reg, [True] * 36 + [False] * 64)
    _predictions(qa, [True] * 30 + [False] * 6 + [True] * 60 + [False] * 4)
    for folder, forgetting in ((reg, 0.02), (qa, 0.05)):
        results = json.loads((folder / "results.json").read_text())
        results["metrics"] |= {
            "forgetting": forgetting,
            "forgetting_ci95": [forgetting - 0.01, forgetting + 0.01],
            "per_category": {"Unknown": {"n": 100, "acc": results["metrics"]["acc"]}},
        }
        results["finetune"] = {"tokens": 15540, "wall_s": 120.0}
        (folder / "results.json").write_text(json.dumps(results))
    report = build_report([tmp_path])
    (table,) = [t for t in report.tables if t.name == "arms"]
    rows = {row[2]: row for row in table.rows}
    assert list(rows) == ["Base", "FT-reg", "QA-FT", "RAFT"]  # the paper's arms first
    header = table.header
    qa_row = dict(zip(header, rows["QA-FT"], strict=True))
    assert qa_row["Answers"] == "closed-book" and qa_row["Acc"].startswith("0.900")
    assert qa_row["vs FT-reg"].startswith("60/6, p=")  # 60 gained, 6 lost against FT-reg
    assert qa_row["Forgetting"] == "+0.050±0.010" and qa_row["Acc Unknown"] == "0.90 (n=100)"
    assert qa_row["Train tokens"] == "15,540"
    assert dict(zip(header, rows["RAFT"], strict=True))["Answers"] == "K=1"
    record = next(r for r in table.records if r["arm"] == "QA-FT")
    assert record["vs_ft_reg_p"] < 1e-9 and record["forgetting"] == 0.05
    assert dict(zip(header, rows["Base"], strict=True))["vs FT-reg"] == "—"


def _with_probes(folder: Path, probes: dict[str, float], forgetting: float | None = None) -> None:
    results = json.loads((folder / "results.json").read_text())
    results["metrics"]["probes"] = {
        family: {"n": 100, "acc": acc, "acc_ci95": [acc - 0.05, acc + 0.05], "chance": 0.25}
        for family, acc in probes.items()
    }
    if forgetting is not None:
        results["metrics"] |= {
            "forgetting": forgetting,
            "forgetting_ci95": [forgetting - 0.01, forgetting + 0.01],
        }
    (folder / "results.json").write_text(json.dumps(results))


def _family_predictions(folder: Path, direct: list[bool], reversal: list[bool]) -> None:
    lines = [{"id": f"q{i}", "correct": c} for i, c in enumerate(direct)]
    # Probe ids that collide with direct ones must still never be paired with them.
    lines += [{"id": f"q{i}", "correct": c, "family": "reversal"} for i, c in enumerate(reversal)]
    (folder / "predictions.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")


def test_probe_families_get_arms_columns_a_best_arm_table_and_the_frontier_plot(tmp_path):
    common = {"model": "smollm2_135m", "data": "novel_facts"}
    base = write_cell(tmp_path, **common, method="base", acc=0.25)
    rag = write_cell(tmp_path, **common, method="rag", k=3, acc=0.80)
    reg = write_cell(tmp_path, **common, method="ft", acc=0.36)
    qa = [write_cell(tmp_path, **common, method="qa_ft", acc=0.9, seed=s) for s in (0, 1)]
    _with_probes(base, {"reversal": 0.20, "comparison": 0.50})
    _with_probes(rag, {"reversal": 0.51, "comparison": 0.49})
    _with_probes(reg, {"reversal": 0.24, "comparison": 0.45}, forgetting=0.02)
    _with_probes(qa[0], {"reversal": 0.21, "comparison": 0.41}, forgetting=0.06)
    _with_probes(qa[1], {"reversal": 0.23, "comparison": 0.43}, forgetting=0.05)
    # RAG vs Base on reversal: 40 gained, 9 lost (direct records say the opposite).
    _family_predictions(rag, [False] * 100, [True] * 40 + [False] * 9 + [True] * 11 + [False] * 40)
    _family_predictions(base, [True] * 100, [False] * 40 + [True] * 9 + [True] * 11 + [False] * 40)
    report = build_report([tmp_path])
    (arms,) = [t for t in report.tables if t.name == "arms"]
    assert arms.header[4:7] == ["Acc", "Acc reversal", "Acc comparison"]
    rows = {row[2]: dict(zip(arms.header, row, strict=True)) for row in arms.rows}
    # One seed with per-question records: the bootstrap over its 100 reversal questions (51 right),
    # not the ±0.050 its results.json claims.
    assert rows["RAG"]["Acc reversal"] == "0.510±0.100"
    # Two seeds: mean ± t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.01 = 0.127.
    assert rows["QA-FT"]["Acc reversal"] == "0.220±0.127"
    qa_record = next(r for r in arms.records if r["arm"] == "QA-FT")
    assert qa_record["acc_comparison"] == pytest.approx(0.42)

    (probes,) = [t for t in report.tables if t.name == "probes"]
    assert probes.header == [
        "Model", "Task", "Shots", "Family", "Chance", "Best arm", "Acc", "Next best", "Margin",
        "Best vs next",
    ]  # fmt: skip
    by_family = {row[3]: row for row in probes.rows}
    assert by_family["reversal"][5:10] == [
        "RAG K=3", "0.510±0.100", "FT-reg 0.240±0.050", "+0.270", "—",
    ]  # fmt: skip
    # Only Base has paired reversal records besides RAG: no McNemar against FT-reg.
    assert by_family["comparison"][5:9] == [
        "Base", "0.500±0.050", "RAG K=3 0.490±0.050", "+0.010",
    ]  # fmt: skip
    record = next(r for r in probes.records if r["family"] == "reversal")
    assert record["best_arm"] == "RAG K=3" and record["margin"] == pytest.approx(0.27)

    out = write_report(report, tmp_path / "report")
    assert (out / "acc_vs_forgetting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "### Probe families: the best arm per family" in text and "acc_vs_forgetting" in text
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert {c["acc_reversal"] for c in cells} >= {"0.51", "0.2"}


def test_mcnemar_on_probe_records_is_never_mixed_with_the_direct_questions(tmp_path):
    common = {"model": "smollm2_135m", "data": "novel_facts"}
    base = write_cell(tmp_path, **common, method="base", acc=0.25)
    rag = write_cell(tmp_path, **common, method="rag", k=3, acc=0.80)
    _with_probes(base, {"reversal": 0.20})
    _with_probes(rag, {"reversal": 0.51})
    _family_predictions(rag, [False] * 100, [True] * 40 + [False] * 9 + [True] * 11 + [False] * 40)
    _family_predictions(base, [True] * 100, [False] * 40 + [True] * 9 + [True] * 11 + [False] * 40)
    (probes,) = [t for t in build_report([tmp_path]).tables if t.name == "probes"]
    (row,) = probes.rows
    assert row[5] == "RAG K=3" and row[7] == "Base 0.200±0.075"
    assert row[9].startswith("40/9, p=") and row[9].endswith("(seed 0)")
    (record,) = probes.records
    assert record["mcnemar_gained"] == 40 and record["mcnemar_lost"] == 9
    assert record["mcnemar_p"] < 1e-4


def test_results_without_probes_report_as_before(sweep, tmp_path):
    report = build_report([sweep])
    assert not [t for t in report.tables if t.name in ("probes", "arms")]
    out = write_report(report, tmp_path / "out")
    assert not (out / "acc_vs_forgetting.png").exists()


def _reconfigured(cell, section: str, **values):
    """The cell's results as if run with ``section.key=value`` (a setting of its own: new hash)."""
    results = json.loads((cell / "results.json").read_text())
    results["config"].setdefault(section, {}).update(values)
    results["config_hash"] = f"h-{section}-{sorted(values.items())}"
    (cell / "results.json").write_text(json.dumps(results))
    return cell


def test_two_hop_retrieval_and_reverse_qa_are_arms_of_their_own(tmp_path):
    common = {"model": "smollm2_135m", "data": "novel_facts"}
    one = write_cell(tmp_path, **common, method="rag", k=3, acc=0.90)
    two = _reconfigured(
        write_cell(tmp_path / "hops", **common, method="rag", k=3, acc=0.90), "retriever", hops=2
    )
    qa = write_cell(tmp_path, **common, method="qa_ft", acc=0.9)
    reverse = write_cell(tmp_path, **common, method="qa_ft_reverse", acc=0.9)
    _with_probes(one, {"two_hop": 0.30})
    _with_probes(two, {"two_hop": 0.70})
    _with_probes(qa, {"two_hop": 0.25}, forgetting=0.05)
    _with_probes(reverse, {"two_hop": 0.25}, forgetting=0.05)
    report = build_report([tmp_path])
    (arms,) = [t for t in report.tables if t.name == "arms"]
    assert [row[2] for row in arms.rows] == ["RAG", "RAG hops=2", "QA-FT", "QA-FT+reverse"]
    (probes,) = [t for t in report.tables if t.name == "probes"]
    (row,) = probes.rows
    assert row[5:9] == ["RAG hops=2 K=3", "0.700±0.050", "RAG K=3 0.300±0.050", "+0.400"]
    out = write_report(report, tmp_path / "report")
    cells = {c["method"] + c.get("hops", ""): c for c in csv.DictReader((out / "cells.csv").open())}
    assert cells["rag2"]["hops"] == "2" and "finetune_hops" not in cells["rag2"]


def test_a_replay_setting_is_a_frontier_point_of_its_own(tmp_path):
    common = {"model": "smollm2_135m", "data": "novel_facts", "method": "qa_ft"}
    plain = write_cell(tmp_path, **common, acc=0.86)
    replay = _reconfigured(
        write_cell(tmp_path / "replay", **common, acc=0.72), "finetune", replay_ratio=0.5
    )
    _with_probes(plain, {"two_hop": 0.13}, forgetting=0.047)
    _with_probes(replay, {"two_hop": 0.25}, forgetting=0.031)
    (arms,) = [t for t in build_report([tmp_path]).tables if t.name == "arms"]
    assert sorted(row[2] for row in arms.rows) == ["QA-FT", "QA-FT replay=0.5"]

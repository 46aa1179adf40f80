"""Probe families scored by a cell (kfr.cell.probes): metrics["probes"], the family records of
predictions.jsonl, the console lines, W&B/CSV keys, and bad eval.probes settings (exit 2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import kfr.cell.run
from kfr.cell import run_cell
from kfr.cell.probes import PROBE_FAMILIES
from kfr.core.errors import UserError
from kfr.core.schema import typed_config
from kfr.data.loading import EvalData, load_eval_data
from kfr.data.readers import write_questions_jsonl
from kfr.data.schema import Question
from kfr.tracking import flat_metrics
from tests.conftest import compose_config
from tests.unit.test_bad_input import _assert_one_line_exit_2_nothing_written
from tests.unit.test_cli import run_kfr

TINY = ["model=tiny_llama", "eval.progress=false", "eval.bootstrap_samples=20", "logger=none"]
FAMILIES = ("reversal", "comparison")


def _probes(direct: list[Question]) -> dict[str, list[Question]]:
    """Two hand-made families from the direct questions: 4 four-choice, 3 two-choice."""
    reversal = [
        dataclasses.replace(q, id=f"rev-{q.id}", question=f"Whose fact is {q.choices[q.answer]}?")
        for q in direct[:4]
    ]
    comparison = [
        Question(
            f"cmp-{i}",
            f"Who came first, {a.id} or {b.id}?",
            (a.id, b.id),
            i % 2,
            subject="comparison",
            source_ids=(a.source_ids or ()) + (b.source_ids or ()) or None,
        )
        for i, (a, b) in enumerate(zip(direct[:3], direct[3:6], strict=True))
    ]
    return {"reversal": reversal, "comparison": comparison}


@pytest.fixture
def with_probes(monkeypatch):
    """The loaded data offers the two families above (whatever the data generator offers)."""
    load = kfr.cell.run.load_eval_data

    def load_with_probes(*args, **kwargs):
        data = load(*args, **kwargs)
        data.probes = _probes(data.questions)
        return data

    monkeypatch.setattr(kfr.cell.run, "load_eval_data", load_with_probes)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["base", "rag"])
def test_a_cell_scores_every_family_after_the_direct_questions(
    tmp_path, cache_dir, with_probes, method
):
    overrides = [*TINY, f"paths.cache_dir={cache_dir}", "data.limit=8", "eval.control=null"]
    overrides += [f"method={method}", "retriever.k=1", "eval.probes=null"]
    results = run_cell(compose_config(overrides), tmp_path / "run")
    probes = results.metrics["probes"]
    assert list(probes) == list(FAMILIES)  # every family offered (eval.probes=null), kfr's order
    assert probes["reversal"]["n"] == 4 and probes["comparison"]["n"] == 3
    assert probes["reversal"]["chance"] == pytest.approx(0.25)
    assert probes["comparison"]["chance"] == pytest.approx(0.5)
    for family in FAMILIES:
        low, high = probes[family]["acc_ci95"]
        assert low <= probes[family]["acc"] <= high
        assert set(probes[family]) >= {"acc_norm", "acc_norm_ci95"}
        assert ("recall_at_k" in probes[family]) == (method == "rag")
    records = _records(tmp_path / "run")
    direct = [r for r in records if "family" not in r]
    assert len(direct) == results.metrics["n"] == 8  # direct records unchanged, first
    assert [r["family"] for r in records[8:]] == ["reversal"] * 4 + ["comparison"] * 3
    assert records[8]["id"] == "rev-" + records[0]["id"]
    if method == "rag":
        assert probes["reversal"]["recall_at_k"] is not None
        assert len(records[8]["retrieved_ids"]) == 1
    assert results.timings["probes_s"] > 0 and set(results.scoring["probes"]) == set(FAMILIES)
    summary = results.summary()
    assert "  probe reversal    acc " in summary and "(chance 0.250)  n=4" in summary
    assert "  probe comparison  acc " in summary and "(chance 0.500)  n=3" in summary
    assert ("recall@1" in summary.split("probe reversal")[1]) == (method == "rag")
    flat = flat_metrics(results.to_json())
    assert flat["probes/reversal/acc"] == probes["reversal"]["acc"]
    assert flat["probes/comparison/acc_ci95_high"] == probes["comparison"]["acc_ci95"][1]
    assert flat["probes/comparison/n"] == 3 and flat["timings/probes_s"] > 0


def test_eval_probes_selects_families_and_empty_turns_them_off(tmp_path, cache_dir, with_probes):
    common = [*TINY, f"paths.cache_dir={cache_dir}", "data.limit=6", "eval.control=null"]
    # Off by default: a single cell scores its direct questions only.
    assert typed_config(compose_config(common)).eval.probes == []
    one = run_cell(compose_config([*common, "eval.probes=[comparison]"]), tmp_path / "one")
    assert list(one.metrics["probes"]) == ["comparison"]
    assert {r.get("family") for r in _records(tmp_path / "one")} == {None, "comparison"}
    none = run_cell(compose_config([*common, "eval.probes=[]"]), tmp_path / "none")
    assert "probes" not in none.metrics and "probe " not in none.summary()
    assert all("family" not in r for r in _records(tmp_path / "none"))
    assert "probes" not in none.scoring and "probes/reversal/acc" not in flat_metrics(
        none.to_json()
    )


def test_probe_fewshot_examples_come_from_the_direct_questions_not_about_the_same_documents(
    tmp_path, cache_dir, with_probes
):
    from kfr.cell.probes import _builder, _example_pool

    cfg = typed_config(
        compose_config([*TINY, f"paths.cache_dir={cache_dir}", "eval.shots=2", "data.limit=10"])
    )
    data = load_eval_data(cfg.data, cache_dir, need_knowledge=False)
    probe = _probes(data.questions)["reversal"][0]
    (request,) = _builder(cfg, [probe], _example_pool(data))()
    examples = request.context.split("\n\n")[:-1]
    assert len(examples) == 2
    same_documents = [q for q in data.questions if set(q.source_ids) & set(probe.source_ids)]
    assert same_documents and not any(q.question in request.context for q in same_documents)


# ----------------------------------------------------------------------------- bad input


def test_an_unknown_family_is_one_line_exit_2_before_any_work(tmp_path, cache_dir):
    out_root = tmp_path / "outputs"
    result = run_kfr(
        "eval.probes=[reversal,backwards]",
        f"paths.output_root={out_root}",
        cache_dir=cache_dir,
        cwd=tmp_path,
    )
    line = _assert_one_line_exit_2_nothing_written(result, out_root)
    assert line == (
        "kfr: error: field 'eval.probes': unknown probe family 'backwards': one of "
        f"{', '.join(PROBE_FAMILIES)} (null = every family the data offers, [] = none)"
    )


def test_a_family_the_data_does_not_offer_stops_before_the_model_loads(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded: the check came too late")

    monkeypatch.setattr(kfr.cell.run, "load_model", refuse)
    questions = tmp_path / "q.jsonl"
    write_questions_jsonl(questions, [Question(f"q{i}", "Q?", ("a", "b"), 0) for i in range(3)])
    cfg = compose_config(
        [*TINY, "data=custom", f"data.questions={questions}", "eval.probes=[two_hop]"]
    )
    with pytest.raises(UserError) as info:
        run_cell(cfg, tmp_path / "run")
    assert info.value.field == "eval.probes"
    message = info.value.format()
    assert "'two_hop' asked for, but " + str(questions) + " offers no probe families" in message
    assert "\n" not in message and not (tmp_path / "run").exists()
    # Left null, data without probes scores none and says nothing.
    from kfr.cell.probes import selected_families

    custom = typed_config(compose_config([*TINY, "data=custom", "eval.probes=null"]))
    assert selected_families(custom, EvalData([], None, None, "q.jsonl", None, None)) == []

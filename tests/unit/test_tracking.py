"""Run-level logging: names and tags, the CSV fallback, and real offline W&B runs read back."""

from __future__ import annotations

import csv

import pytest

from kfr.cell.results import CellResults
from kfr.core.schema import TrackerKind
from kfr.tracking import flat_metrics, open_tracker, run_name, tracker_kind
from tests.conftest import compose_config
from tests.unit.wandb_offline import read_finished_run

RESULTS = {
    "config_hash": "abc123",
    "metrics": {
        "n": 6,
        "acc": 0.5,
        "acc_ci95": [0.25, 0.75],
        "acc_norm": 0.5,
        "acc_norm_ci95": [0.2, 0.8],
        "chance": 0.25,
        "recall_at_k": 0.9,
        "per_subject": {"a": {"n": 3, "acc": 0.4}, "b": {"n": 3, "acc": 0.6}},
        "probes": {
            "reversal": {"n": 4, "acc": 0.25, "acc_ci95": [0.0, 0.75], "chance": 0.25},
            "two_hop": {"n": 4, "acc": 0.5, "acc_ci95": [0.0, 1.0], "recall_at_k": 0.5},
        },
    },
    "timings": {"total_s": 1.5},
}


def _results(predictions=None) -> CellResults:
    """RESULTS as a cell hands them to its tracker (in memory, with its predictions)."""
    cell = {"model": "tiny_llama", "data": "novel_facts", "method": "rag"}
    results = CellResults.from_json({"cell": cell, **RESULTS})
    results.predictions = predictions
    return results


def test_run_names_tags_and_flat_metrics():
    cfg = compose_config(["method=ft_rag", "model=tiny_llama", "augment.paraphrases=4", "seed=2"])
    assert run_name(cfg) == "tiny_llama-novel_facts-ft_rag-k3-p4-0shot-s2"
    cfg = compose_config(["data=custom", "data.questions=/x/ce.jsonl", "eval.style=letter"])
    assert run_name(cfg) == "smollm2_135m-custom:ce-base-0shot-letter-s0"
    flat = flat_metrics(RESULTS)
    assert flat["acc"] == 0.5 and flat["acc_ci95_low"] == 0.25 and flat["acc_ci95_high"] == 0.75
    assert flat["recall_at_k"] == 0.9 and flat["subject/b/acc"] == 0.6
    assert flat["timings/total_s"] == 1.5 and "per_subject" not in flat
    # Each probe family's numbers under probes/<family>/, never mixed with the direct ones.
    assert flat["probes/reversal/acc"] == 0.25 and flat["probes/reversal/acc_ci95_high"] == 0.75
    assert flat["probes/two_hop/recall_at_k"] == 0.5 and flat["probes/reversal/chance"] == 0.25
    assert "probes" not in flat and flat["acc"] == 0.5


def test_csv_logger_and_wandb_off_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = compose_config(["logger=wandb", "experiment_name=study"])
    assert tracker_kind(cfg) is TrackerKind.csv  # W&B turned off: CSV instead
    with open_tracker(cfg, tmp_path) as tracker:
        tracker.log_results(_results())
        training_loggers = tracker.training_loggers()
    (row,) = csv.DictReader((tmp_path / "metrics.csv").open())
    assert row["group"] == "study" and row["job_type"] == "base" and row["acc"] == "0.5"
    assert row["probes/reversal/acc"] == "0.25" and row["probes/two_hop/acc"] == "0.5"
    assert row["tags"] == "base smollm2_135m novel_facts"
    assert training_loggers == []
    none_dir = tmp_path / "none"
    with open_tracker(compose_config(["logger=none"]), none_dir) as tracker:
        tracker.log_results(_results())
    assert not none_dir.exists()


@pytest.mark.integration  # wandb's service and Lightning's import: ~15 s
def test_wandb_offline_runs_hold_config_group_tags_and_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = ["logger=wandb", "experiment_name=study", "method=rag", "model=tiny_llama"]
    cfg = compose_config(overrides)
    ok_dir, failed_dir = tmp_path / "ok", tmp_path / "failed"
    ok_dir.mkdir()
    predictions = [{"id": "q0", "prediction": 1, "correct": True, "retrieved_ids": ["d1", "d2"]}]
    with open_tracker(cfg, ok_dir) as tracker:
        import wandb

        assert wandb.run is not None
        (logger,) = tracker.training_loggers()  # fine-tuning curves go into this very run
        assert logger.experiment is wandb.run
        tracker.log_results(_results(predictions))
    assert wandb.run is None  # finished: nothing leaks into the next cell
    with pytest.raises(RuntimeError, match="boom"), open_tracker(cfg, failed_dir):
        raise RuntimeError("boom")
    assert wandb.run is None

    (ok_run,) = (ok_dir / "wandb").glob("offline-run-*")
    run = read_finished_run(ok_run)
    assert run.group == "study" and run.job_type == "rag" and run.project == "kfr"
    assert run.tags == ["rag", "tiny_llama", "novel_facts"]
    assert run.name == "tiny_llama-novel_facts-rag-k3-0shot-s0"
    assert run.config["model"]["name"] == "tiny_llama" and run.config["retriever"]["k"] == 3
    assert run.config["config_hash"]
    assert run.summary["acc"] == 0.5 and run.summary["acc_ci95_low"] == 0.25
    assert run.summary["recall_at_k"] == 0.9 and run.summary["predictions"]["nrows"] == 1
    assert run.summary["probes/reversal/acc"] == 0.25
    assert run.exit_code == 0
    (failed_run,) = (failed_dir / "wandb").glob("offline-run-*")
    failed = read_finished_run(failed_run)
    assert failed.exit_code == 1 and "boom" in failed.summary["error"]


def test_wandb_run_id_is_one_per_cell_and_new_only_when_finished_results_are_redone(tmp_path):
    from kfr.tracking.wandb_run import run_id

    cfg = compose_config(["method=rag", "model=tiny_llama"])
    cell = tmp_path / "method=rag"
    cell.mkdir()
    first = run_id(cfg, cell)
    assert first == run_id(cfg, cell) == run_id(cfg, tmp_path / "." / "method=rag")  # requeued
    assert run_id(cfg, tmp_path / "other") != first
    assert run_id(compose_config(["method=rag", "model=tiny_llama", "seed=1"]), cell) != first
    assert all(c not in first for c in "/\\#?%:") and len(first) <= 64
    (cell / "results.json").write_text("{}")
    assert run_id(cfg, cell).startswith(first + "-")  # skip_completed=false: a new run


def test_the_predictions_table_carries_pmi_and_probe_diagnostics_as_text():
    from kfr.tracking.wandb_run import _predictions_table

    records = [
        {"id": "q0", "prediction": 1, "correct": True, "prediction_pmi": 0, "correct_pmi": False},
        {"id": "p0", "family": "comparison", "prediction": 0, "correct": False,
         "diagnostics": {"position_bias": True, "consistency": None}},
    ]  # fmt: skip
    table = _predictions_table(records)
    assert table["columns"] == [
        "id", "family", "prediction", "correct", "prediction_pmi", "correct_pmi", "diagnostics"
    ]  # fmt: skip
    assert table["data"][1][-1] == '{"position_bias": true, "consistency": null}'
    assert table["data"][0][-1] is None and table["data"][0][4] == 0

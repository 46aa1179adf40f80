"""The GPU benchmark's plumbing on the CPU (``--dry-run``): both sides of a fine-tuning and of a
scoring comparison run end to end, with ratios, MFU, memory and the prediction check."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")


def test_dry_run_compares_both_sides(tmp_path):
    from benchmarks import gpu_bench

    cases = "fit_135m_full,score_135m_short_fp32,score_135m_long_bf16,score_7b_long_bf16"
    code = gpu_bench.main(["--dry-run", "--out", str(tmp_path), "--only", cases])
    report = json.loads((tmp_path / "results.json").read_text())
    rows = {row["name"]: row for row in report["cases"]}
    assert code == 0, [r.get("error") for r in report["cases"]]
    assert report["dry_run"] and rows["score_7b_long_bf16"]["status"] == "skipped"
    fit = rows["fit_135m_full"]
    assert fit["status"] == "passed" and fit["peer"] == "transformers.Trainer"
    for side in (fit["kfr"], fit["peer_side"]):
        assert side["tokens_per_s"] > 0 and side["mfu"] > 0 and side["peak_memory_mb"] > 0
        assert side["timed_steps"] == 2  # 3 steps, the first one warm-up
    assert fit["ratio"] == pytest.approx(
        fit["kfr"]["tokens_per_s"] / fit["peer_side"]["tokens_per_s"], rel=1e-2
    )
    for name in ("score_135m_short_fp32", "score_135m_long_bf16"):
        row = rows[name]
        assert row["status"] == "passed" and row["peer"] == "lm-eval HFLM"
        assert row["kfr"]["questions_per_s"] > 0 and row["peer_side"]["questions_per_s"] > 0
        assert row["same_predictions"] == row["questions"]  # identical predictions
    assert rows["score_135m_short_fp32"]["max_abs_loglik_diff"] < 1e-3
    assert rows["score_135m_long_bf16"]["context_tokens_mean"] > 150
    table = (tmp_path / "gpu_bench.md").read_text()
    assert "| kfr / peer |" in table and "dry run" in table
    assert "transformers.Trainer" in table and "lm-eval HFLM" in table
    assert "x |" in table  # the ratio column


def test_exit_code_flags_disagreeing_predictions():
    from benchmarks.gpu_bench import exit_code

    agree = {"kind": "score", "status": "passed", "same_predictions": 6, "questions": 6}
    assert exit_code({"cases": [agree]}) == 0
    assert exit_code({"cases": [{**agree, "same_predictions": 5}]}) == 1
    assert exit_code({"cases": [{"status": "failed"}]}) == 1

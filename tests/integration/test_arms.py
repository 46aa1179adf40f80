"""Each new arm end to end on the real SmolLM2 with a few novel-facts people: it trains on
questions that are never the evaluation's, scores, and reports what it costs."""

from __future__ import annotations

import pytest

from kfr.cell import run_cell
from tests.conftest import compose_config

pytestmark = pytest.mark.integration

FEW = [
    "data.novel_facts.n_entities=4",
    "finetune.epochs=2",
    "trainer.progress_bar=false",
    "eval.progress=false",
    "eval.bootstrap_samples=100",
    "retriever.k=1",
    "logger=none",
    "eval.probes=[]",  # the direct questions only: probe families add 3x the scoring
]


def test_qa_ft_learns_the_facts_and_reports_forgetting_on_the_embedded_control_set(
    tmp_path, cache_dir
):
    cfg = compose_config([*FEW, "method=qa_ft", f"paths.cache_dir={cache_dir}"])
    results = run_cell(cfg, tmp_path / "qa_ft")
    m, ft = results.metrics, results.finetune
    print(f"qa_ft acc {m['acc']:.3f} forgetting {m['forgetting']:+.3f} (n={m['control_n']})")
    assert m["n"] == 24 and m["acc"] >= 0.5  # chance is 0.25; base SmolLM2 ~0.23
    # 4 people x 7 facts (generator version 2 adds the mentor) x 3 template questions
    assert ft["qa"]["max_5gram_overlap"] < 0.5 and ft["qa"]["pairs"] == 84
    assert m["control_n"] >= 50 and m["control_base_acc"] == 1.0
    assert -1 <= m["forgetting"] <= 1 and results.analysis["source"] == "embedded"


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("distill", []),
        ("raft", []),
        ("ft", ["augment=entigraph", "augment.paraphrases=2"]),
    ],
)
def test_every_other_arm_trains_and_scores_on_smollm2(method, extra, tmp_path, cache_dir):
    overrides = [*FEW, f"method={method}", *extra, "eval.control=null"]
    results = run_cell(compose_config([*overrides, f"paths.cache_dir={cache_dir}"]), tmp_path)
    print(f"{method} {extra}: acc {results.metrics['acc']:.3f}")
    assert results.metrics["n"] == 24 and results.finetune["steps"] > 0
    if method == "raft":
        assert results.metrics["recall_at_1"] >= 0.9 and results.metrics["acc"] >= 0.5
    if method == "ft":
        assert results.finetune["paraphrases"]["source"] == "entigraph"

"""The README's costing of the paper's grid is reproducible from benchmarks.paper_cost."""

from __future__ import annotations

import pytest

from benchmarks import paper_cost
from benchmarks.paper_cost import Inputs, arm_tokens, cost_rows, markdown


def test_training_flops_are_six_n_tokens_per_epoch():
    inp = Inputs(models={"m": 1e9}, tasks={"current_events": 100}, epochs=2)
    rows = {r.arm: r for r in cost_rows(inp)}
    assert rows["FT-reg"].train_flops == pytest.approx(6 * 1e9 * inp.kb_tokens * 2)
    assert rows["FT-par, 10 paraphrases"].train_flops == pytest.approx(
        11 * rows["FT-reg"].train_flops
    )
    assert rows["base"].train_flops == 0
    assert rows["base"].score_flops == pytest.approx(2 * 1e9 * 100 * inp.prompt_tokens[0])


def test_the_grid_has_the_papers_cells():
    inp = Inputs()
    arms = arm_tokens(inp, "anatomy", 135)
    assert arms["RAG (K=1..5)"][2] == 2 * 5  # 0 and 5 shots x K = 1..5
    assert arm_tokens(inp, "current_events", 910)["base"][2] == 1  # 0-shot only
    assert {"QA-FT", "distill", "RAFT", "FT+RAG (FT-reg's model)"} <= set(arms)
    total = sum(r.cells for r in cost_rows(inp))
    assert total == 3 * (5 * 2 + 1) * (7 + 2 * 5)  # models x (task, shots) x cells per arm set


def test_a_measured_mfu_plugs_in_and_scales_the_hours():
    inp = Inputs(cell_overhead_s=0, scoring_mfu=1e9)  # scoring all but free: training alone
    ft = next(r for r in cost_rows(inp) if r.arm == "FT-reg")
    assert ft.hours(inp, 0.15) == pytest.approx(2 * ft.hours(inp, 0.30), rel=1e-6)
    table = markdown(Inputs())
    assert "**whole grid**" in table and "30% MFU" in table and "today's measured" in table
    assert paper_cost.main(["--mfu", "0.25"]) == 0


def test_the_readme_prints_this_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = [line for line in markdown(Inputs()).splitlines() if line.startswith("|")]
    assert all(line in readme.splitlines() for line in table)  # rerun paper_cost, paste it

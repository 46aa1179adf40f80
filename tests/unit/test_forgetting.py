"""Forgetting beyond 0/1: log P change, KL from the base and their intervals (tiny model)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from kfr.core.schema import EvalConfig
from kfr.data.schema import Question
from kfr.evaluation.control_cache import cached_base_control, compare_control, score_control
from kfr.evaluation.forgetting import (
    TopK,
    coarsened_kl,
    control_shift,
    forgetting,
    mean_interval,
    next_token_top_k,
    paired_interval,
    prompt_tokens,
    top_k_with_tail,
)
from kfr.evaluation.metrics import exact_binomial_interval
from tests.conftest import compose_config

CONTROL = [
    Question("c1", "What is the capital of France?", ("London", "Paris", "Berlin", "Rome"), 1),
    Question("c2", "What is the capital of Japan?", ("Tokyo", "Seoul", "Lima", "Oslo"), 0),
    Question("c3", "What is the capital of Peru?", ("Quito", "Lima", "Paris", "Rome"), 1),
    Question("c4", "What is the chemical symbol of iron?", ("Fe", "Ir", "I", "F"), 0),
    Question("c5", "What is the chemical symbol of gold?", ("Ag", "Au", "Go", "G"), 1),
    Question("c6", "What is the currency of Japan?", ("Euro", "Won", "Yen", "Peso"), 2),
]
EVAL = EvalConfig(batch_size=4, bootstrap_samples=200, progress=False)
FIELDS = {"id", "base_correct", "correct", "base_logp", "logp", "kl"}


@pytest.fixture(scope="module")
def perturbed_lm(tiny_lm):
    """The tiny model with noise on every weight: a stand-in for a fine-tuned cell."""
    model = copy.deepcopy(tiny_lm.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return replace(tiny_lm, model=model)


def _no_base():
    raise AssertionError("the base model must not be loaded on a cache hit")


# ----------------------------------------------------------------------------- intervals


def test_paired_interval_where_base_and_cell_agree_everywhere():
    upper = exact_binomial_interval(0, 20, 0.95)[1]
    assert upper == pytest.approx(1 - 0.025 ** (1 / 20))
    # The base knows every question (the embedded set): the cell can only lose, so [0, u].
    everything = np.ones(20)
    assert paired_interval(everything, everything, samples=100, seed=0) == [0.0, upper]
    # The base misses some: the cell could gain as well as lose, so symmetric.
    mixed = np.array([1.0, 0.0] * 10)
    assert paired_interval(mixed, mixed, samples=100, seed=0) == [-upper, upper]
    # A cell that loses (gains) every question: the exact interval of n of n, signed.
    low, high = exact_binomial_interval(20, 20, 0.95)
    assert paired_interval(np.ones(20), np.zeros(20), samples=100, seed=0) == [low, high]
    assert paired_interval(np.zeros(20), np.ones(20), samples=100, seed=0) == [-high, -low]
    # Anything else: the paired percentile bootstrap, the interval holding the estimate.
    cell = np.array([1.0] * 15 + [0.0] * 5)
    low, high = paired_interval(everything, cell, samples=500, seed=1)
    assert 0.0 < low < 0.25 < high < 1.0


def test_forgetting_of_an_unchanged_cell_is_an_interval_not_a_point():
    result = forgetting([True] * 258, [True] * 258, samples=100, seed=0)
    low, high = result["forgetting_ci95"]
    assert result["forgetting"] == 0.0 and low == 0.0 and 0.01 < high < 0.015


def test_mean_interval_of_a_constant_is_that_constant():
    assert mean_interval(np.zeros(5), samples=100, seed=0) == [0.0, 0.0]
    assert mean_interval(np.full(5, -2.5), samples=100, seed=0) == [-2.5, -2.5]
    low, high = mean_interval(np.array([0.0, 1.0, 2.0, 3.0]), samples=500, seed=0)
    assert 0.0 <= low < 1.5 < high <= 3.0


def test_control_shift_means_and_intervals():
    metrics = control_shift([-1.0, -2.0, -3.0], [-1.5, -2.0, -4.0], [0.1, 0.0, 0.5], seed=0)
    assert metrics["control_logp_change"] == pytest.approx(-0.5)
    low, high = metrics["control_logp_change_ci95"]
    assert low <= -0.5 <= high
    assert metrics["control_kl"] == pytest.approx(0.2)
    assert metrics["control_kl_ci95"][0] >= 0.0
    assert "control_kl" not in control_shift([0.0], [0.0], None)
    with pytest.raises(ValueError):
        control_shift([0.0], [0.0, 1.0], None)


# ----------------------------------------------------------------------------- coarsened KL


def _coarse(logprobs: torch.Tensor, k: int, ids: torch.Tensor | None = None) -> TopK:
    ids, kept, tail = top_k_with_tail(logprobs, k, ids)
    return TopK(ids.numpy(), kept.numpy(), tail.numpy())


def test_coarsened_kl_is_a_proper_kl_below_the_full_one():
    generator = torch.Generator().manual_seed(0)
    p = torch.randn(3, 50, generator=generator).mul(3).log_softmax(-1)
    q = (p + 0.5 * torch.randn(3, 50, generator=generator)).log_softmax(-1)
    base = _coarse(p, 5)
    # The buckets hold all the mass.
    total = np.exp(base.logprobs.astype(np.float64)).sum(1) + np.exp(base.log_tail)
    assert total == pytest.approx(np.ones(3), abs=1e-5)
    assert coarsened_kl(base, _coarse(p, 5, torch.from_numpy(base.ids))) == pytest.approx(0.0)
    kl = coarsened_kl(base, _coarse(q, 5, torch.from_numpy(base.ids)))
    # By hand: top 5 of p and the rest as one bucket, on both sides.
    for row in range(3):
        top = p[row].topk(5).indices
        rest = torch.ones(50, dtype=torch.bool)
        rest[top] = False
        pp = torch.cat([p[row, top].exp(), p[row, rest].exp().sum()[None]]).double()
        qq = torch.cat([q[row, top].exp(), q[row, rest].exp().sum()[None]]).double()
        assert kl[row] == pytest.approx(float((pp * (pp / qq).log()).sum()), rel=1e-4)
    full = (p.exp() * (p - q)).sum(-1).numpy()
    assert np.all(kl > 0) and np.all(kl <= full + 1e-6)
    # k at least the vocabulary: no tail, the full KL.
    whole = _coarse(p, 64)
    assert np.all(np.isneginf(whole.log_tail))
    exact = coarsened_kl(whole, _coarse(q, 64, torch.from_numpy(whole.ids)))
    assert exact == pytest.approx(full, rel=1e-4)
    with pytest.raises(ValueError):
        coarsened_kl(base, _coarse(q, 5))


def test_prompt_end_distribution_does_not_depend_on_padding(tiny_lm):
    """Batched (right-padded) against one prompt at a time, no padding."""
    batched = next_token_top_k(tiny_lm, CONTROL, k=8, batch_size=4)
    prompts = prompt_tokens(tiny_lm.tokenizer, CONTROL, tiny_lm.max_length)
    assert len({len(p) for p in prompts}) > 1  # the batch really pads
    with torch.no_grad():
        for row, prompt in enumerate(prompts):
            logits = tiny_lm.model(input_ids=torch.tensor([prompt])).logits[0, -1]
            ids, kept, tail = top_k_with_tail(logits.float().log_softmax(-1)[None], 8)
            assert batched.ids[row].tolist() == ids[0].tolist()
            assert batched.logprobs[row] == pytest.approx(kept[0].numpy(), abs=1e-4)
            assert batched.log_tail[row] == pytest.approx(float(tail[0]), abs=1e-4)


# ----------------------------------------------------------------------------- cell vs base


def test_a_cell_identical_to_its_base_has_no_change(tmp_path, tiny_lm):
    metrics, records = compare_control(tiny_lm, tiny_lm, CONTROL, EVAL, "tiny", tmp_path)
    assert metrics["control_logp_change"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["control_kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["forgetting"] == 0.0 and metrics["control_n"] == len(CONTROL)
    assert [r["id"] for r in records] == [q.id for q in CONTROL]
    for record in records:
        assert set(record) == FIELDS
        assert record["correct"] == record["base_correct"]
        assert record["logp"] == pytest.approx(record["base_logp"], abs=1e-5)
        assert record["kl"] == pytest.approx(0.0, abs=1e-6)


def test_a_perturbed_cell_moves_away_from_its_base(tmp_path, tiny_lm, perturbed_lm):
    metrics, records = compare_control(tiny_lm, perturbed_lm, CONTROL, EVAL, "tiny", tmp_path)
    assert metrics["control_kl"] > 1e-4 and all(r["kl"] > 0 for r in records)
    low, high = metrics["control_kl_ci95"]
    assert 0 <= low <= metrics["control_kl"] <= high
    # Delta log P: straight from each model's scores of the correct answers.
    base = score_control(tiny_lm, CONTROL)
    cell = score_control(perturbed_lm, CONTROL)
    direct = [
        c.loglikelihoods[q.answer] - b.loglikelihoods[q.answer]
        for q, b, c in zip(CONTROL, base, cell, strict=True)
    ]
    assert metrics["control_logp_change"] == pytest.approx(np.mean(direct), abs=1e-5)
    assert [r["logp"] - r["base_logp"] for r in records] == pytest.approx(direct, abs=1e-5)
    low, high = metrics["control_logp_change_ci95"]
    assert low <= metrics["control_logp_change"] <= high
    # The KL is the full one coarsened: never above it.
    prompts = prompt_tokens(tiny_lm.tokenizer, CONTROL, tiny_lm.max_length)
    with torch.no_grad():
        for record, prompt in zip(records, prompts, strict=True):
            ids = torch.tensor([prompt])
            p = tiny_lm.model(input_ids=ids).logits[0, -1].log_softmax(-1)
            q = perturbed_lm.model(input_ids=ids).logits[0, -1].log_softmax(-1)
            assert record["kl"] <= float((p.exp() * (p - q)).sum()) + 1e-5


def test_the_base_side_is_cached_once_per_model_and_set(tmp_path, tiny_lm, perturbed_lm):
    first, _ = compare_control(tiny_lm, perturbed_lm, CONTROL, EVAL, "tiny", tmp_path)
    (entry,) = (p for p in (tmp_path / "control").glob("base-*") if p.is_dir())
    assert {p.name for p in entry.iterdir()} >= {"base_scores.json", "next_token.npz"}
    # Another cell of the same base: the base model is never loaded, the numbers are the same.
    again, _ = compare_control(_no_base, perturbed_lm, CONTROL, EVAL, "tiny", tmp_path)
    assert again == first
    side = cached_base_control(_no_base, CONTROL, EVAL, "tiny", tmp_path)
    assert side.next_token is not None and side.next_token.ids.shape == (len(CONTROL), 32)
    # Another base or another set: built anew.
    with pytest.raises(AssertionError, match="must not"):
        compare_control(_no_base, perturbed_lm, CONTROL, EVAL, "other", tmp_path)
    with pytest.raises(AssertionError, match="must not"):
        compare_control(_no_base, perturbed_lm, CONTROL[:3], EVAL, "tiny", tmp_path)


def test_top_k_zero_needs_only_scores(tmp_path, tiny_lm):
    metrics, records = compare_control(tiny_lm, tiny_lm, CONTROL, EVAL, "t", tmp_path, top_k=0)
    assert "control_kl" not in metrics and "control_logp_change" in metrics
    assert all(r["kl"] is None for r in records)


# ----------------------------------------------------------------------------- a cell


def test_a_fine_tuned_cell_writes_control_records(tmp_path, ft_cache, monkeypatch, perturbed_lm):
    """run_cell's control block, with training replaced by the perturbed model (seconds, not a
    Lightning fit: tests/unit/test_recipes.py trains for real)."""
    import kfr.finetune
    from kfr.cell import run_cell
    from kfr.cell.folder import CONTROL_FILE, PREDICTIONS_FILE
    from kfr.data.questions import write_questions_jsonl
    from kfr.finetune.checkpoints import FinetunedModel

    def trained(cfg, data, cache_dir, loggers=()):
        return FinetunedModel(perturbed_lm, {"steps": 0}, tmp_path / "checkpoint")

    monkeypatch.setattr(kfr.finetune, "finetuned_model", trained)
    write_questions_jsonl(tmp_path / "control.jsonl", CONTROL)
    common = [
        "model=tiny_llama",
        "data.novel_facts.n_entities=6",
        "eval.probes=[]",
        "eval.progress=false",
        "eval.bootstrap_samples=20",
        "eval.known_prompts=0",
        f"eval.control={tmp_path / 'control.jsonl'}",
        f"paths.cache_dir={ft_cache}",
    ]
    results = run_cell(compose_config([*common, "method=qa_ft"]), tmp_path / "run")
    m = results.metrics
    for name in ("forgetting", "control_logp_change", "control_kl"):
        low, high = m[f"{name}_ci95"]
        assert low <= m[name] <= high, name
    assert m["control_kl"] > 0
    lines = (tmp_path / "run" / CONTROL_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [q.id for q in CONTROL]
    assert all(set(r) == FIELDS for r in records)
    assert np.mean([r["logp"] - r["base_logp"] for r in records]) == pytest.approx(
        m["control_logp_change"]
    )
    assert np.mean([r["kl"] for r in records]) == pytest.approx(m["control_kl"])
    assert (tmp_path / "run" / PREDICTIONS_FILE).is_file()
    # A base cell compares nothing and writes no control records.
    base = run_cell(compose_config([*common, "method=base"]), tmp_path / "b")
    assert "control_kl" not in base.metrics and not (tmp_path / "b" / CONTROL_FILE).exists()

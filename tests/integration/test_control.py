"""The embedded control set with the real SmolLM2-135M: how many facts it knows confidently."""

from __future__ import annotations

import pytest

from kfr.core.schema import EvalConfig
from kfr.data.control import build_control_questions
from kfr.evaluation.control_cache import (
    cached_base_correct,
    cached_categories,
    ensure_control_set,
)
from kfr.evaluation.known import CATEGORIES, HIGHLY_KNOWN

pytestmark = pytest.mark.integration


def test_smollm2_keeps_enough_embedded_control_questions(smollm2, tmp_path):
    eval_cfg = EvalConfig(control="embedded", control_confidence=0.5, batch_size=32, progress=False)
    questions, info = ensure_control_set(eval_cfg, smollm2, "smollm2", tmp_path)
    candidates = len(build_control_questions(0))
    print(
        f"\nSmolLM2 embedded control set at confidence 0.5: kept {info['n']} of "
        f"{info['candidates']} ({info['per_subject']})"
    )
    assert info["candidates"] == candidates
    assert len(questions) == info["n"] >= 50
    base_correct = cached_base_correct(smollm2, questions, eval_cfg, "smollm2", tmp_path)
    accuracy = sum(base_correct) / len(base_correct)
    print(f"SmolLM2 accuracy on the kept control set: {accuracy}")
    assert accuracy == 1.0

    # SliCK on a sample of the kept set (few-shot scoring is slow on CPU): facts known
    # confidently 0-shot are mostly HighlyKnown with few-shot prompts too.
    sample = questions[:: max(1, len(questions) // 24)]
    known_cfg = EvalConfig(known_prompts=2, batch_size=32, progress=False)
    categories = cached_categories(smollm2, sample, known_cfg, "smollm2", tmp_path)
    counts = {c: sum(v == c for v in categories.values()) for c in CATEGORIES}
    print(f"SliCK categories of {len(sample)} kept questions (2 prompts x 4 shots): {counts}")
    assert counts[HIGHLY_KNOWN] >= len(sample) // 2

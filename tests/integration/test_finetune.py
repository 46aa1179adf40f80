"""Fine-tuning for real: SmolLM2-135M on a handful of documents through `run_cell`, and the GPU
paths (bf16 mixed precision, QLoRA with CUDA kernels) when a GPU is at hand."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from kfr.cell import run_cell
from kfr.data.readers import write_knowledge_base_jsonl, write_questions_jsonl
from kfr.data.schema import Document, Question
from tests.conftest import compose_config

PEOPLE = [
    ("Velorin Quastebrook", "Marrowvale", "oboe"),
    ("Thalasta Morvholt", "Brimsalt", "theorbo"),
    ("Ysmeline Zeltwick", "Ostrevik", "zither"),
    ("Brevimar Ondustrom", "Calderhythe", "harp"),
]


def _write_data(tmp_path):
    documents = [
        Document(
            f"p{i}",
            f"{name} was born in the city of {city}. {name}'s favourite musical instrument was "
            f"the {instrument}. {name} worked as a lighthouse keeper in {city} for thirty years.",
        )
        for i, (name, city, instrument) in enumerate(PEOPLE)
    ]
    cities = [city for _, city, _ in PEOPLE]
    questions = [
        Question(f"q{i}", f"In which city was {name} born?", tuple(cities), i, "city", (f"p{i}",))
        for i, (name, _, _) in enumerate(PEOPLE)
    ]
    write_knowledge_base_jsonl(tmp_path / "kb.jsonl", documents)
    write_questions_jsonl(tmp_path / "q.jsonl", questions)


def _cell(tmp_path, cache_dir, *overrides):
    (tmp_path / "cache").mkdir(exist_ok=True)
    if not (tmp_path / "cache" / "models").exists():
        (tmp_path / "cache" / "models").symlink_to(cache_dir / "models", target_is_directory=True)
    cfg = compose_config(
        [
            "data=custom",
            f"data.questions={tmp_path / 'q.jsonl'}",
            f"data.knowledge={tmp_path / 'kb.jsonl'}",
            "method=ft",
            "finetune.block_size=64",
            "finetune.batch_size=4",
            "finetune.epochs=3",
            "finetune.lr=1e-3",
            "trainer.micro_batch_size=2",
            "trainer.progress_bar=false",
            "eval.progress=false",
            *overrides,
        ]
    )
    OmegaConf.update(cfg, "paths.cache_dir", str(tmp_path / "cache"))
    return cfg


@pytest.mark.integration
def test_smollm2_lora_cell_trains_scores_and_reuses(tmp_path, cache_dir, smollm2):
    _write_data(tmp_path)
    results = run_cell(_cell(tmp_path, cache_dir, "finetune=lora"), tmp_path / "run1")
    ft = results.finetune
    print(json.dumps(ft, indent=1))
    assert ft["mode"] == "lora" and ft["reused"] is False
    assert ft["train_loss_last"] < ft["train_loss_first"]
    assert results.metrics["n"] == len(PEOPLE)
    assert results.scoring["checkpoint"] == ft["checkpoint"]
    rows = list(csv.DictReader((tmp_path / "run1" / "finetune" / "metrics.csv").open()))
    assert len(rows) == ft["steps"]
    # The cell with retrieval on top reuses the checkpoint (it does not train again).
    again = run_cell(
        _cell(tmp_path, cache_dir, "finetune=lora", "method=ft_rag", "retriever.k=1"),
        tmp_path / "r2",
    )
    assert again.finetune["reused"] is True
    assert again.finetune["checkpoint"] == ft["checkpoint"]


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_bf16_mixed_training_on_a_gpu(tmp_path, cache_dir, mode):
    _write_data(tmp_path)
    cfg = _cell(
        tmp_path,
        cache_dir,
        "trainer=gpu",
        f"finetune={mode}",
        "model=tiny_llama",
        "model.device=cuda",
        "eval.control=null",  # a random model knows no fact to forget
    )
    results = run_cell(cfg, tmp_path / "run")
    ft = results.finetune
    assert ft["precision"] == "bf16-mixed" and ft["train_loss_last"] < ft["train_loss_first"]
    assert results.scoring["device"].startswith("cuda")


@pytest.mark.gpu
@gpu
def test_qlora_with_cuda_kernels(tmp_path, cache_dir):
    _write_data(tmp_path)
    cfg = _cell(
        tmp_path,
        cache_dir,
        "trainer=gpu",
        "finetune=qlora",
        "model=tiny_llama",
        "model.device=cuda",
        "eval.control=null",  # a random model knows no fact to forget
    )
    results = run_cell(cfg, tmp_path / "run")
    assert results.finetune["mode"] == "qlora" and results.finetune["steps"] > 0

"""Fine-tuning on the tiny model: a real Lightning fit, LoRA/QLoRA round trips, checkpoint reuse,
settings rejected up front."""

from __future__ import annotations

import csv
import importlib.util
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.core.schema import typed_config
from kfr.data.loading import EvalData
from kfr.data.schema import Document, Question
from kfr.finetune import checkpoints, finetuned_model
from kfr.finetune.modes import check_finetune_settings, strategy
from kfr.finetune.train import train
from tests.conftest import compose_config

DOCUMENTS = [
    Document(
        f"d{i}",
        f"Velorin Quastebrook number {i} was born in Marrowvale in 19{10 + i}. "
        f"By profession, Velorin Quastebrook number {i} was a cartographer who loved the oboe.",
    )
    for i in range(6)
]
QUESTIONS = [
    Question(f"q{i}", f"Where was Velorin Quastebrook number {i} born?", ("Marrowvale", "Oslo"), 0)
    for i in range(2)
]


class Trained(Exception):
    """Raised by a stand-in for training: proves that training was asked for."""


def ft_config(*overrides: str, cache: str):
    cfg = compose_config(
        [
            "model=tiny_llama",
            "method=ft",
            "finetune.batch_size=4",
            "finetune.block_size=32",
            "finetune.epochs=1",
            "finetune.lr=1e-2",
            "finetune.warmup_ratio=0",
            "trainer.micro_batch_size=2",
            "trainer.progress_bar=false",
            "eval.progress=false",
            "eval.control=null",  # a random model knows no fact: no control set to forget
            *overrides,
        ]
    )
    OmegaConf.update(cfg, "paths.cache_dir", cache)
    return typed_config(cfg)


def eval_data(documents=DOCUMENTS) -> EvalData:
    return EvalData(QUESTIONS, None, list(documents), "questions", "knowledge", None)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_full_fit_lowers_the_loss_and_saves_an_hf_checkpoint(ft_cache, tmp_path):
    cfg = ft_config("finetune=full", "finetune.lr=3e-3", "finetune.epochs=4", cache=str(ft_cache))
    texts = [d.text for d in DOCUMENTS]
    summary = train(cfg, texts, ft_cache, tmp_path / "out")
    # Micro-batches of 2 blocks, 2 accumulated per optimizer step (batch 4).
    assert summary["steps"] == 4 * math.ceil(summary["blocks_per_epoch"] / 4)
    assert summary["train_loss_last"] < summary["train_loss_first"] - 0.5
    assert summary["tokens"] == summary["blocks_per_epoch"] * 32 * 4
    assert (tmp_path / "out" / "model" / "config.json").is_file()
    rows = list(csv.DictReader((tmp_path / "out" / "logs" / "metrics.csv").open()))
    assert len(rows) == summary["steps"]  # one row per optimizer step: loss and learning rate
    assert {"train/loss", "train/lr"} <= set(rows[0])
    lrs = [float(r["train/lr"]) for r in rows]
    assert lrs[0] == pytest.approx(3e-3) and lrs[-1] < lrs[0]  # cosine decay


class _Preempted(Exception):
    """Stands in for the signal that ends a SLURM job mid-training."""


class _PreemptAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise _Preempted


def _trained_weights(out_dir, mode):
    if mode == "full":
        from safetensors.torch import load_file

        return load_file(str(out_dir / "model" / "model.safetensors"))
    from safetensors.torch import load_file

    return load_file(str(out_dir / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize(
    ("mode", "epoch"),
    # Epoch 0 too: Lightning makes the first epoch's loader before it restores the checkpoint
    # (a resume there once trained the epoch's first batches twice).
    [("full", 1), ("lora", 1), ("full", 0)],
)
def test_a_preempted_training_resumes_mid_epoch_to_the_same_weights(
    ft_cache, tmp_path, mode, epoch
):
    # 2 blocks per optimizer step (1 x 2 accumulated), several steps per epoch, 2 epochs; a
    # resumable checkpoint after every step (checkpoint_every_min ~ 0).
    cfg = ft_config(
        f"finetune={mode}",
        "finetune.batch_size=2",
        "finetune.epochs=2",
        "finetune.lr=3e-3",
        "trainer.micro_batch_size=1",
        "trainer.checkpoint_every_min=1e-9",
        cache=str(ft_cache),
    )
    texts = [d.text for d in DOCUMENTS]
    whole = train(cfg, texts, ft_cache, tmp_path / "whole")
    steps_per_epoch = whole["steps"] // 2
    assert steps_per_epoch >= 3 and whole["resumed_from_step"] is None
    stop = epoch * steps_per_epoch + 2  # in the middle of the epoch

    resume_dir = tmp_path / "resume"
    with pytest.raises(_Preempted):
        train(
            cfg, texts, ft_cache, tmp_path / "first", resume_dir=resume_dir,
            callbacks=[_PreemptAtStep(stop)],
        )  # fmt: skip
    # Only the finished checkpoint: no temporary file of a save is left beside it.
    assert sorted(p.name for p in resume_dir.iterdir()) == ["last.ckpt"]
    resumed = train(cfg, texts, ft_cache, tmp_path / "second", resume_dir=resume_dir)
    # The preemption hit before step `stop` was saved: the job goes on from the step before.
    assert resumed["resumed_from_step"] == stop - 1 and resumed["steps"] == whole["steps"]
    expected, got = (
        _trained_weights(tmp_path / "whole", mode),
        _trained_weights(tmp_path / "second", mode),
    )
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    # The loss of the resumed steps is the uninterrupted run's loss at the same steps.
    assert resumed["train_loss_last"] == pytest.approx(whole["train_loss_last"], abs=1e-5)


def test_lora_adapter_round_trip_gives_the_same_logits(ft_cache, tmp_path, cache_dir):
    cfg = ft_config("finetune=lora", cache=str(ft_cache))
    model, _ = strategy(cfg.finetune.mode).trainable_model(cfg, ft_cache)
    # A freshly initialised adapter is a no-op (B = 0): give it weights to compare.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    model.eval()
    ids = torch.tensor([[1, 500, 600, 700, 800, 2]])
    expected = _logits(model, ids)
    model.save_pretrained(tmp_path / "ckpt" / "adapter")
    # Unmerged, as saved, the adapter reproduces the logits exactly ...
    from peft import PeftModel

    from kfr.models import load_model

    base = load_model(cfg.model, cache_dir).model
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "ckpt" / "adapter")).eval()
    assert torch.equal(_logits(reloaded, ids), expected)
    # ... and merged for scoring, to float rounding.
    lm = strategy(cfg.finetune.mode).load_for_scoring(cfg, tmp_path / "ckpt", ft_cache)
    assert not isinstance(lm.model, PeftModel)
    torch.testing.assert_close(_logits(lm.model, ids), expected, atol=1e-5, rtol=1e-5)
    assert lm.checkpoint == str(tmp_path / "ckpt")


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="no bitsandbytes")
def test_qlora_trains_two_steps_on_the_cpu_and_scores_4bit(ft_cache):
    cfg = ft_config("finetune=qlora", "finetune.lr=1e-3", cache=str(ft_cache))
    tuned = finetuned_model(cfg, eval_data(DOCUMENTS[:3]), ft_cache)
    assert tuned.summary["mode"] == "qlora" and tuned.summary["steps"] == 2
    assert (tuned.checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tuned.checkpoint / "model").exists()  # adapter only
    layer = tuned.lm.model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(layer.base_layer).__name__ == "Linear4bit"  # scored on the 4-bit weights
    from kfr.evaluation.loglikelihood import score_requests
    from kfr.evaluation.prompts import build_requests

    scores, _ = score_requests(
        tuned.lm.model,
        tuned.lm.tokenizer,
        build_requests(QUESTIONS, "cloze"),
        max_length=64,
        progress=False,
    )
    assert all(s < 0 for row in scores for s in row)


def test_ft_and_ft_rag_share_one_training(ft_cache, monkeypatch, tmp_path):
    data = eval_data()
    first = finetuned_model(ft_config(cache=str(ft_cache)), data, ft_cache)
    assert first.summary["reused"] is False
    calls = []

    def record(*args, **kwargs):
        calls.append(args)
        raise Trained

    monkeypatch.setattr(checkpoints, "train", record)
    again = finetuned_model(ft_config("method=ft_rag", cache=str(ft_cache)), data, ft_cache)
    assert calls == [] and again.summary["reused"] is True
    assert again.checkpoint == first.checkpoint
    assert again.summary["key"] == first.summary["key"]
    # Anything that changes the training data or settings trains anew.
    changed = ft_config("finetune.lr=5e-3", cache=str(ft_cache))
    with pytest.raises(Trained):
        finetuned_model(changed, data, ft_cache)
    assert len(calls) == 1
    out = checkpoints.copy_training_logs(first.checkpoint, tmp_path / "run")
    assert (out / "metrics.csv").is_file() and (out / "training.json").is_file()


def test_a_failed_training_leaves_no_checkpoint(ft_cache, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(checkpoints, "train", boom)
    with pytest.raises(RuntimeError):
        finetuned_model(ft_config(cache=str(ft_cache)), eval_data(), ft_cache)
    assert not any(p.is_dir() for p in (ft_cache / "finetuned").iterdir())


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["trainer.precision=16-mixed"], r"field 'trainer\.precision'.*needs a GPU"),
        (["finetune=qlora", "trainer.strategy=fsdp"], r"field 'trainer\.strategy'.*FSDP"),
        (["finetune.batch_size=6", "trainer.micro_batch_size=4"], "micro_batch_size"),
        (["finetune.lr=0"], r"finetune\.lr"),
        (["trainer.checkpoint_every_min=-1"], r"trainer\.checkpoint_every_min"),
        (["finetune=lora", "finetune.lora.target_modules=[]"], "target_modules"),
    ],
)
def test_impossible_settings_are_rejected_before_loading(overrides, fragment, tmp_path):
    with pytest.raises(UserError, match=fragment):
        check_finetune_settings(ft_config(*overrides, cache=str(tmp_path)))


def test_qlora_without_bitsandbytes_says_how_to_install_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name)
    )
    with pytest.raises(UserError, match="pip install 'bitsandbytes"):
        check_finetune_settings(ft_config("finetune=qlora", cache=str(tmp_path)))


def test_unknown_lora_layers_name_the_ones_that_exist(ft_cache):
    cfg = ft_config("finetune=lora", "finetune.lora.target_modules=[qkv]", cache=str(ft_cache))
    with pytest.raises(UserError, match=r"target_modules.*q_proj"):
        strategy(cfg.finetune.mode).trainable_model(cfg, ft_cache)


def test_run_cell_reports_the_training_and_copies_its_log(ft_cache, tmp_path):
    from kfr.cell import run_cell
    from kfr.data.readers import write_knowledge_base_jsonl, write_questions_jsonl

    write_knowledge_base_jsonl(tmp_path / "kb.jsonl", DOCUMENTS)
    write_questions_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    cfg = ft_config(
        "data=custom",
        f"data.questions={tmp_path / 'q.jsonl'}",
        f"data.knowledge={tmp_path / 'kb.jsonl'}",
        cache=str(ft_cache),
    )
    results = run_cell(cfg, tmp_path / "run")
    ft = results.finetune
    assert ft["mode"] == "full" and ft["reused"] is False and ft["steps"] > 0  # the default
    for key in ("train_loss_first", "train_loss_last", "tokens", "tokens_per_s", "wall_s"):
        assert ft[key] is not None
    assert ft["paraphrases"]["requested_per_document"] == 0
    assert results.scoring["checkpoint"] == ft["checkpoint"]
    assert (tmp_path / "run" / "finetune" / "metrics.csv").is_file()


def test_cli_rejects_16_bit_training_on_the_cpu_with_exit_code_2(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    env = {**os.environ, "KFR_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "kfr.cli", "model=tiny_llama", "method=ft"]
    command += ["trainer.precision=16-mixed", f"paths.output_root={tmp_path / 'out'}"]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "trainer.precision" in done.stderr and "needs a GPU" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("results.json"))


@pytest.mark.integration  # wandb's service process: ~15 s
def test_training_curves_go_into_the_cells_wandb_run(ft_cache, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from kfr.cell import run_cell
    from kfr.data.readers import write_knowledge_base_jsonl, write_questions_jsonl
    from kfr.tracking import open_tracker
    from tests.unit.wandb_offline import read_finished_run

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    write_knowledge_base_jsonl(tmp_path / "kb.jsonl", DOCUMENTS)
    write_questions_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    cfg = ft_config(
        "logger=wandb",
        "data=custom",
        f"data.questions={tmp_path / 'q.jsonl'}",
        f"data.knowledge={tmp_path / 'kb.jsonl'}",
        cache=str(ft_cache),
    )
    run_dir = tmp_path / "run"
    with open_tracker(cfg, run_dir) as tracker:
        results = run_cell(cfg, run_dir, loggers=tracker.training_loggers())
        tracker.log_results(results)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_finished_run(offline)
    losses = [row["train/loss"] for row in run.history if "train/loss" in row]
    assert len(losses) == results.finetune["steps"]  # one point per optimizer step
    assert all(math.isfinite(x) for x in losses)
    assert run.summary["acc"] == results.metrics["acc"] and run.exit_code == 0

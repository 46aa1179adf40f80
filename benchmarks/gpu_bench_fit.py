"""The GPU benchmark's fine-tuning half: kfr against ``transformers.Trainer`` in one process.

Each case trains the same random-weight model (:data:`SHAPES`, SmolLM2's tokenizer, created on
the device by :func:`kfr.models.loading.load_model`; nothing written but the trained result in a
temporary folder) on the same packed blocks with the same micro-batch, accumulation, block size,
optimizer (fused AdamW), schedule, clipping and precision, through
:func:`benchmarks.train_throughput.run_kfr` (kfr's real ``train``: Lightning) and
:func:`benchmarks.train_throughput.run_peer` (``Trainer`` on the model kfr's strategy builds:
for LoRA and QLoRA that is peft's model, QLoRA with kfr's nf4 BitsAndBytesConfig settings).
Tokens/s are steady state: from the ``warmup``-th optimizer step to the last, the device
synchronised at each step. MFU = model FLOPs (:meth:`benchmarks.roofline.ModelShape.
training_flops`: 6 x parameters x tokens, 4 x for the frozen base of LoRA/QLoRA, whose forward
and backward are counted, plus attention) / the bf16 matmul peak measured in the same run at the
model's GEMM shapes. Peak memory: ``torch.cuda.max_memory_allocated`` per side (the CPU: the
process's resident high-water mark, shared by both sides).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.roofline import MemoryWatermark, ModelShape

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# random_init shapes (hidden, layers, heads, KV heads, intermediate); vocabulary = the tokenizer's.
SHAPES = {
    "smollm2_135m": (576, 30, 9, 3, 1536),  # SmolLM2-135M's config.json
    "mistral_7b": (4096, 32, 32, 8, 14336),  # Mistral-7B-v0.1's
    "tiny": (64, 2, 4, 2, 128),  # the dry run's (conf/model/tiny_llama.yaml)
}
SHAPE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
)
PEERS = {"full": "transformers.Trainer", "lora": "peft + Trainer", "qlora": "peft + Trainer"}


@dataclass(frozen=True)
class FitCase:
    name: str
    shape: str
    mode: str  # full | lora | qlora
    block: int
    micro: int
    accumulate: int
    steps: int  # optimizer steps per side
    warmup: int  # of them, not timed


FIT_CASES = (
    FitCase("fit_135m_full", "smollm2_135m", "full", 2048, 8, 2, 10, 3),
    FitCase("fit_135m_lora", "smollm2_135m", "lora", 2048, 8, 2, 10, 3),
    FitCase("fit_135m_qlora", "smollm2_135m", "qlora", 2048, 8, 2, 10, 3),
    FitCase("fit_7b_qlora", "mistral_7b", "qlora", 2048, 2, 4, 5, 2),
    FitCase("fit_7b_lora", "mistral_7b", "lora", 2048, 2, 4, 5, 2),
)


def dry_case(case: FitCase) -> FitCase:
    """The same comparison at the dry run's size (a few steps of a 2-layer model)."""
    return FitCase(case.name, "tiny", case.mode, 64, 2, 2, 3, 1)


def shape_overrides(shape: str) -> list[str]:
    values = SHAPES[shape]
    return [f"model.random_init.{k}={v}" for k, v in zip(SHAPE_KEYS, values, strict=True)]


def model_shape(shape: str, vocab: int) -> ModelShape:
    hidden, layers, heads, kv_heads, intermediate = SHAPES[shape]
    return ModelShape(layers, hidden, intermediate, heads, kv_heads, hidden // heads, vocab)


def fit_config(case: FitCase, *, device: str, tokenizer: str | None, cache_dir: Path) -> Any:
    from hydra import compose, initialize_config_dir

    import kfr.core.identity  # noqa: F401  (registers the resolvers conf/hydra/ uses)
    from kfr.core.schema import typed_config

    overrides = [
        "method=ft",
        "model=tiny_llama",
        *shape_overrides(case.shape),
        f"model.random_init.max_position_embeddings={max(2048, case.block)}",
        f"finetune={case.mode}",
        "finetune.epochs=1",
        f"finetune.block_size={case.block}",
        f"finetune.batch_size={case.micro * case.accumulate}",
        "finetune.warmup_ratio=0.1",
        "trainer=gpu",
        f"trainer.micro_batch_size={case.micro}",
        "trainer.progress_bar=false",
        "trainer.checkpoint_every_min=0",
        f"paths.cache_dir={cache_dir}",
    ]
    if tokenizer:
        overrides.append(f"model.tokenizer={tokenizer}")
    if device == "cpu":  # the GPU profile on the CPU, its bf16-mixed precision kept
        overrides += ["trainer.accelerator=cpu", "model.device=cpu"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return typed_config(compose(config_name="config", overrides=overrides))


def training_texts(tokenizer, blocks: int, block: int, cache_dir: Path) -> list[str]:
    """The novel-facts documents, cycled until they fill ``blocks`` blocks (cut at a text)."""
    from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts
    from kfr.data.readers import read_knowledge_base
    from kfr.finetune.data import encode_texts

    data = ensure_novel_facts(NovelFactsSpec(), cache_dir)
    docs = [d.text for d in read_knowledge_base(data / "knowledge.jsonl")]
    lengths = [len(ids) for ids in encode_texts(tokenizer, docs)]
    budget, chosen, i = blocks * block, [], 0
    while budget > 0:
        chosen.append(docs[i % len(docs)])
        budget -= lengths[i % len(docs)]
        i += 1
    return chosen


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _side(run, cfg, texts, cache_dir: Path, case: FitCase, device: str) -> dict[str, Any]:
    _free(device)
    with MemoryWatermark(device) as memory:
        timing = run(cfg, texts, cache_dir, skip=case.warmup)
    _free(device)
    summary = timing.summary or {}
    return {
        "tokens_per_s": round(timing.tokens_per_s, 1),
        "timed_steps": timing.steps,
        "peak_memory_mb": round(memory.gpu_mb if memory.gpu_mb is not None else memory.rss_mb),
        "memory_kind": "gpu allocated" if memory.gpu_mb is not None else "process RSS",
        "train_loss_last": summary.get("train_loss_last"),
    }


def run_fit(case: FitCase, *, device: str, tokenizer: str | None, cache_dir: Path, peak) -> dict:
    """One comparison: both sides, ratio, MFU against ``peak`` (a roofline.Peak), memory."""
    from benchmarks.train_throughput import run_kfr, run_peer
    from kfr.models.loading import load_tokenizer

    cfg = fit_config(case, device=device, tokenizer=tokenizer, cache_dir=cache_dir)
    tok = load_tokenizer(cfg.model, cache_dir)
    texts = training_texts(tok, case.steps * case.micro * case.accumulate, case.block, cache_dir)
    cfg.augment.paraphrases = 0
    ours = _side(run_kfr, cfg, texts, cache_dir, case, device)
    theirs = _side(run_peer, cfg, texts, cache_dir, case, device)
    shape = model_shape(case.shape, len(tok))
    per_token = shape.training_flops(1, case.block, frozen=case.mode != "full") / case.block
    row = {
        "name": case.name,
        "kind": "fit",
        "shape": case.shape,
        "mode": case.mode,
        "peer": PEERS[case.mode],
        "block": case.block,
        "micro_batch": case.micro,
        "accumulate": case.accumulate,
        "precision": str(cfg.trainer.precision),
        "kfr": ours,
        "peer_side": theirs,
        "ratio": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
        "model_flops_per_token": per_token,
    }
    for side in (ours, theirs):
        side["mfu"] = round(peak.share(per_token * side["tokens_per_s"], 1.0), 4)
    return row


def fit_peak_shapes(case: FitCase, vocab: int) -> list[tuple[int, int, int]]:
    return model_shape(case.shape, vocab).gemm_shapes(case.micro * case.block)


def bench_cache(tmp: Path) -> Path:
    """A fresh cache under ``tmp`` that shares the user cache's converted models (the embedded
    tokenizer): nothing the benchmark trains outlives it."""
    import os

    from platformdirs import user_cache_dir

    shared = Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr")) / "models"
    cache = tmp / "cache"
    cache.mkdir(parents=True)
    if shared.is_dir():
        (cache / "models").symlink_to(shared, target_is_directory=True)
    return cache

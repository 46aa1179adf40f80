"""Training throughput of kfr's fine-tuning against a plain transformers ``Trainer``.

Same model (the embedded SmolLM2-135M), same packed blocks (kfr's packing of the novel-facts
documents and their template paraphrases), same micro-batch, accumulation, sequence length,
optimizer (fused AdamW), schedule, clipping and precision (float32 on the CPU). kfr runs its real
training path (``kfr.finetune.train.train``: Lightning); the peer runs ``transformers.Trainer``
on the same blocks. Each side runs once untimed first (the first large allocations of a process
page-fault: whichever side ran first would pay for both), then the timed runs alternate, in
swapped order every round (kfr-peer, peer-kfr, ...), so load from other processes hits both
alike; the table reports medians.

Tokens/s are measured between the first and the last optimizer step (steady state: start-up,
first-step allocation and saving excluded, for both); the CPU-time column divides by the
process's CPU seconds instead of wall seconds, steadier when other jobs share the cores. Run from
the repository root::

    .venv/bin/python -m benchmarks.train_throughput [--modes full lora] [--repeats 3]

On cores shared with other jobs, ``OMP_NUM_THREADS=1`` gives steadier (and faster) numbers:
two OpenMP threads wait on each other whenever one of them is descheduled.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class Timing:
    tokens: int  # tokens trained between the first and the last timed step
    wall_s: float
    cpu_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_s


class _StepClock:
    """(wall, cpu) time at every optimizer step; both trainers call it just before stepping."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def timing(self, tokens_per_step: int) -> Timing:
        if len(self.marks) < 2:
            raise SystemExit("need at least 2 optimizer steps to time: raise --steps")
        (w0, c0), (w1, c1) = self.marks[0], self.marks[-1]
        return Timing(tokens_per_step * (len(self.marks) - 1), w1 - w0, c1 - c0)


def _cache_dir() -> Path:
    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))


def _config(mode: str, args: argparse.Namespace):
    from hydra import compose, initialize_config_dir

    from kfr.core.schema import typed_config

    overrides = [
        "method=ft",
        f"finetune={mode}",
        "finetune.epochs=1",
        f"finetune.block_size={args.block_size}",
        f"finetune.batch_size={args.micro_batch * args.accumulate}",
        f"finetune.lr={args.lr}",
        "finetune.warmup_ratio=0.1",
        "trainer=cpu",
        f"trainer.micro_batch_size={args.micro_batch}",
        "trainer.progress_bar=false",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return typed_config(compose(config_name="config", overrides=overrides))


def _texts(cfg, n_blocks: int, cache_dir: Path) -> list[str]:
    """Documents and paraphrases, enough for ``n_blocks`` blocks (cut at a text boundary)."""
    from kfr.data.loading import load_eval_data
    from kfr.finetune.data import encode_texts
    from kfr.finetune.paraphrases import training_texts
    from kfr.models.loading import load_model

    cfg.augment.paraphrases = 8
    data = load_eval_data(cfg.data, cache_dir, need_knowledge=True)
    texts = training_texts(cfg, data, cache_dir).texts
    tokenizer = load_model(cfg.model, cache_dir).tokenizer
    budget, chosen = n_blocks * cfg.finetune.block_size, []
    for text, ids in zip(texts, encode_texts(tokenizer, texts), strict=True):
        if budget <= 0:
            break
        chosen.append(text)
        budget -= len(ids)
    if budget > 0:
        raise SystemExit("not enough text for the requested steps: lower --steps")
    return chosen


def run_kfr(cfg, texts: list[str], cache_dir: Path) -> Timing:
    from lightning.pytorch.callbacks import Callback

    from kfr.finetune.train import train

    clock = _StepClock()

    class Clock(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            clock.mark()

    with tempfile.TemporaryDirectory() as out:
        train(cfg, texts, cache_dir, Path(out), callbacks=[Clock()])
    return clock.timing(cfg.finetune.batch_size * cfg.finetune.block_size)


def run_peer(cfg, texts: list[str], cache_dir: Path) -> Timing:
    """transformers.Trainer on kfr's blocks, with the same model set-up and hyper-parameters."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from kfr.finetune.data import PackedKnowledgeData
    from kfr.finetune.modes import strategy

    torch.manual_seed(cfg.seed)
    # The same model, LoRA set-up included.
    model, tokenizer = strategy(cfg.finetune.mode).trainable_model(cfg, cache_dir)
    data = PackedKnowledgeData(texts, seed=cfg.seed)
    data.connect(tokenizer, cfg.trainer.micro_batch_size, cfg.finetune.block_size)
    blocks = data.blocks(0)
    dataset = [{"input_ids": b, "labels": b} for b in blocks]
    clock = _StepClock()

    class Clock(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            clock.mark()

    ft = cfg.finetune
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=cfg.trainer.micro_batch_size,
            gradient_accumulation_steps=ft.batch_size // cfg.trainer.micro_batch_size,
            num_train_epochs=ft.epochs,
            learning_rate=ft.lr,
            lr_scheduler_type="cosine",
            warmup_steps=ft.warmup_ratio,
            weight_decay=ft.weight_decay,
            max_grad_norm=ft.max_grad_norm,
            optim="adamw_torch_fused",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=cfg.seed,
        )
        Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=[Clock()]).train()
    return clock.timing(ft.batch_size * ft.block_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    import torch

    cache_dir = _cache_dir()
    rows = []
    for mode in args.modes:
        cfg = _config(mode, args)
        texts = _texts(cfg, args.steps * args.micro_batch * args.accumulate, cache_dir)
        cfg.augment.paraphrases = 0  # the texts above are passed in directly
        run_kfr(cfg, texts, cache_dir)  # warm-up, untimed
        run_peer(cfg, texts, cache_dir)
        kfr_runs, peer_runs = [], []
        for round_ in range(args.repeats):
            sides = [(run_kfr, kfr_runs), (run_peer, peer_runs)]
            for run, runs in sides if round_ % 2 == 0 else sides[::-1]:
                runs.append(run(cfg, texts, cache_dir))
        kfr_tps = statistics.median(t.tokens_per_s for t in kfr_runs)
        peer_tps = statistics.median(t.tokens_per_s for t in peer_runs)
        kfr_cpu = statistics.median(t.tokens_per_cpu_s for t in kfr_runs)
        peer_cpu = statistics.median(t.tokens_per_cpu_s for t in peer_runs)
        rows.append((mode, kfr_tps, peer_tps, kfr_cpu, peer_cpu))
    print(
        f"\nSmolLM2-135M, float32 on CPU ({torch.get_num_threads()} threads), block "
        f"{args.block_size}, batch {args.micro_batch}x{args.accumulate}, {args.steps} steps, "
        f"median of {args.repeats} alternating runs after a warm-up, load average "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    header = ["mode", "kfr tok/s", "Trainer tok/s", "ratio"]
    header += ["kfr tok/CPU-s", "Trainer tok/CPU-s", "CPU ratio"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for mode, kt, pt, kc, pc in rows:
        cells = [mode, f"{kt:.1f}", f"{pt:.1f}", f"{kt / pt:.2f}"]
        cells += [f"{kc:.1f}", f"{pc:.1f}", f"{kc / pc:.2f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

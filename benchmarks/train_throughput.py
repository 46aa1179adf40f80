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

On a GPU: ``--device cuda --precision bf16-mixed`` trains through ``trainer=gpu`` (the peer with
``bf16=True`` on the same GPU), and the step clock synchronises the device before each reading;
``--no-peer`` times kfr alone, ``--json FILE`` writes the figures (tokens/s, parameters, steps,
losses) for ``benchmarks/gpu_check.py``. The defaults are the CPU comparison above, unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from benchmarks.roofline import ModelShape, matmul_peak, peak_rss_mb

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class Timing:
    tokens: int  # tokens trained between the first and the last timed step
    wall_s: float
    cpu_s: float
    steps: int = 0  # optimizer steps timed (intervals between the first and the last)
    summary: dict | None = None  # kfr's training summary (train()'s return value); peer: None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_s


class _StepClock:
    """(wall, cpu) time at every optimizer step; both trainers call it just before stepping."""

    def __init__(self, sync: bool = False) -> None:
        self.marks: list[tuple[float, float]] = []
        self.sync = sync  # wait for the GPU's queued work before reading the clock

    def mark(self) -> None:
        if self.sync:
            import torch

            torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), time.process_time()))

    def timing(self, tokens_per_step: int, skip: int = 0) -> Timing:
        """From the ``skip``-th step on (warm-up: allocator, kernel selection) to the last."""
        if len(self.marks) < skip + 2:
            raise SystemExit(f"need at least {skip + 2} optimizer steps to time: raise --steps")
        (w0, c0), (w1, c1) = self.marks[skip], self.marks[-1]
        steps = len(self.marks) - 1 - skip
        return Timing(tokens_per_step * steps, w1 - w0, c1 - c0, steps)


def _cache_dir() -> Path:
    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))


def _config(mode: str, args: argparse.Namespace):
    from hydra import compose, initialize_config_dir

    import kfr.core.identity  # noqa: F401  (registers the resolvers conf/hydra/ uses)
    from kfr.core.schema import typed_config

    overrides = [
        "method=ft",
        f"model={args.model}",
        f"finetune={mode}",
        "finetune.epochs=1",
        f"finetune.block_size={args.block_size}",
        f"finetune.batch_size={args.micro_batch * args.accumulate}",
        f"finetune.lr={args.lr}",
        "finetune.warmup_ratio=0.1",
        "trainer=cpu" if args.device == "cpu" else "trainer=gpu",
        f"trainer.micro_batch_size={args.micro_batch}",
        "trainer.progress_bar=false",
    ]
    if args.precision:
        overrides.append(f"trainer.precision={args.precision}")
    if args.entities:
        overrides.append(f"data.novel_facts.n_entities={args.entities}")
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


def _on_gpu(cfg) -> bool:
    return cfg.trainer.accelerator in {"gpu", "cuda"}


def run_kfr(cfg, texts: list[str], cache_dir: Path, skip: int = 0) -> Timing:
    from lightning.pytorch.callbacks import Callback

    from kfr.finetune.train import train

    clock = _StepClock(sync=_on_gpu(cfg))

    class Clock(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            clock.mark()

    with tempfile.TemporaryDirectory() as out:
        summary = train(cfg, texts, cache_dir, Path(out), callbacks=[Clock()])
    timing = clock.timing(cfg.finetune.batch_size * cfg.finetune.block_size, skip)
    timing.summary = summary
    return timing


def run_peer(cfg, texts: list[str], cache_dir: Path, skip: int = 0) -> Timing:
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
    clock = _StepClock(sync=_on_gpu(cfg))

    class Clock(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            clock.mark()

    ft = cfg.finetune
    precision = str(cfg.trainer.precision)
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
            use_cpu=not _on_gpu(cfg),
            bf16=precision.startswith("bf16"),
            fp16=precision.startswith("16"),
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=cfg.seed,
        )
        Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=[Clock()]).train()
    return clock.timing(ft.batch_size * ft.block_size, skip)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: trainer=cpu, cuda: trainer=gpu",
    )
    parser.add_argument(
        "--precision", help="trainer.precision (default: the trainer's: 32-true / bf16-mixed)"
    )
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model option")
    parser.add_argument(
        "--entities", type=int, help="novel-facts people (more text for more or larger steps)"
    )
    parser.add_argument(
        "--no-peer", dest="peer", action="store_false", help="time kfr only (no Trainer runs)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    import torch

    cache_dir = _cache_dir()
    rows, records = [], []
    peak = None
    for mode in args.modes:
        cfg = _config(mode, args)
        if peak is None:
            from kfr.models.loading import load_model

            shape = ModelShape.from_config(load_model(cfg.model, cache_dir).model.config)
            # The ceiling, measured now with the same threads, at a micro-batch's tokens.
            rows_per_gemm = args.micro_batch * args.block_size
            peak = matmul_peak(shape.gemm_shapes(rows_per_gemm), device=args.device)
            print(peak.describe(), flush=True)
        texts = _texts(cfg, args.steps * args.micro_batch * args.accumulate, cache_dir)
        cfg.augment.paraphrases = 0  # the texts above are passed in directly
        run_kfr(cfg, texts, cache_dir)  # warm-up, untimed
        if args.peer:
            run_peer(cfg, texts, cache_dir)
        kfr_runs, peer_runs = [], []
        for round_ in range(args.repeats):
            sides = [(run_kfr, kfr_runs), (run_peer, peer_runs)][: 2 if args.peer else 1]
            for run, runs in sides if round_ % 2 == 0 else sides[::-1]:
                runs.append(run(cfg, texts, cache_dir))
        kfr_tps = statistics.median(t.tokens_per_s for t in kfr_runs)
        kfr_cpu = statistics.median(t.tokens_per_cpu_s for t in kfr_runs)
        peer_tps = statistics.median(t.tokens_per_s for t in peer_runs) if peer_runs else math.nan
        peer_cpu = (
            statistics.median(t.tokens_per_cpu_s for t in peer_runs) if peer_runs else math.nan
        )
        # Model FLOPs per token (block-long causal sequences); LoRA's frozen weights get no
        # gradient, so its minimum is 4x rather than 6x the parameters per token.
        per_token = shape.training_flops(1, args.block_size, frozen=mode != "full")
        per_token /= args.block_size
        kfr_mfu = peak.share(per_token * kfr_tps, 1.0)
        peer_mfu = peak.share(per_token * peer_tps, 1.0) if peer_runs else math.nan
        rows.append((mode, kfr_tps, peer_tps, kfr_cpu, peer_cpu, kfr_mfu, peer_mfu))
        summary = kfr_runs[-1].summary or {}
        records.append(
            {
                "mode": mode,
                "kfr_tokens_per_s": round(kfr_tps, 1),
                "peer_tokens_per_s": round(peer_tps, 1) if peer_runs else None,
                "kfr_tokens_per_cpu_s": round(kfr_cpu, 1),
                "kfr_mfu": round(kfr_mfu, 3),
                "peer_mfu": round(peer_mfu, 3) if peer_runs else None,
                "matmul_peak_gflops": round(peak.gflops, 1),
                "peak_rss_mb": round(peak_rss_mb()),
                "timed_steps": kfr_runs[-1].steps,
                "tokens_per_step": cfg.finetune.batch_size * cfg.finetune.block_size,
                "precision": str(cfg.trainer.precision),
                "parameters": summary.get("parameters"),
                "trainable_parameters": summary.get("trainable_parameters"),
                "train_loss_first": summary.get("train_loss_first"),
                "train_loss_last": summary.get("train_loss_last"),
            }
        )
    where = (
        f"on {torch.cuda.get_device_name()}"
        if args.device == "cuda"
        else f"on CPU ({torch.get_num_threads()} threads)"
    )
    precision = args.precision or ("32-true" if args.device == "cpu" else "bf16-mixed")
    print(
        f"\n{args.model}, {precision} {where}, block "
        f"{args.block_size}, batch {args.micro_batch}x{args.accumulate}, {args.steps} steps, "
        f"median of {args.repeats} alternating runs after a warm-up, load average "
        f"{os.getloadavg()[0]:.1f}; MFU = model FLOPs (benchmarks.roofline) / the matmul peak; "
        f"peak RSS {peak_rss_mb():.0f} MB (both sides, one process)\n"
    )
    header = ["mode", "kfr tok/s", "Trainer tok/s", "ratio"]
    header += ["kfr tok/CPU-s", "Trainer tok/CPU-s", "CPU ratio", "kfr MFU", "Trainer MFU"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for mode, kt, pt, kc, pc, km, pm in rows:
        cells = [mode, f"{kt:.1f}", f"{pt:.1f}", f"{kt / pt:.2f}"]
        cells += [f"{kc:.1f}", f"{pc:.1f}", f"{kc / pc:.2f}", f"{km:.0%}", f"{pm:.0%}"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        report = {
            "model": args.model,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "block_size": args.block_size,
            "micro_batch": args.micro_batch,
            "accumulate": args.accumulate,
            "steps": args.steps,
            "repeats": args.repeats,
            "modes": records,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

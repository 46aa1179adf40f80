"""The GPU check's plan: every kind of kfr cell once, and what to read back from its results.json.

Each cell is its own ``python3 -m kfr.cli`` process under its own time box (a hang or a CUDA
error costs that cell only; a multirun would share both), on a model of SmolLM2-135M's shape with
random weights and SmolLM2's real tokenizer (``model=tiny_llama model.tokenizer=DIR
model.random_init.*``: the 89 MiB embedded package cannot travel), the embedded novel-facts data
(240 questions, 40 documents), ``logger=none eval.control=null``. Each cell gets its own cache
folder: a DDP or FSDP cell would otherwise reuse the checkpoint of the same training on one GPU
(devices and strategy are not in the training key) and train nothing.

``--dry-run`` runs the same cells on the CPU: ``model.device=cpu trainer.accelerator=cpu
retriever.device=cpu``, tiny_llama's own 2-layer shape, 4 people (24 questions), one epoch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# SmolLM2-135M's shape (its config.json); vocabulary and tied embeddings come from the tokenizer
# and kfr.models.loading._build_random_llama.
SHAPE_135M = (
    "model.random_init.hidden_size=576",
    "model.random_init.num_hidden_layers=30",
    "model.random_init.num_attention_heads=9",
    "model.random_init.num_key_value_heads=3",
    "model.random_init.intermediate_size=1536",
)
# Few-shot examples that make cloze contexts of ~300 tokens: every batch then reaches
# kfr.evaluation.loglikelihood.CACHED_PATH_MIN_CONTEXT (256) and is scored by the cached path.
LONG_SHOTS = 16
CACHED_PATH_MIN_CONTEXT = 256
DRY_ENTITIES = 4  # the schema's least: 24 questions, enough for LONG_SHOTS examples each


@dataclass(frozen=True)
class CellSpec:
    name: str
    title: str
    overrides: tuple[str, ...]
    box_s: int  # time box on the GPU (the dry run has its own)
    retrieves: bool = False
    trains: bool = False
    long_context: bool = False
    dry_skip: str | None = None  # why the dry run cannot run it
    # Starts a distributed process group, which binds a rendezvous port: such cells never run at
    # the same time as each other (benchmarks.gpu_schedule).
    distributed: bool = False
    module: str = "kfr.cli"  # what ``python3 -m`` runs: a kfr cell, or the GPU benchmark
    alone: bool = False  # nothing else on the GPU meanwhile (timings that mean something)


_FT = ("trainer=gpu",)
# The supervised recipes train 3 epochs over 720 examples by default (135 steps: 40 s at the
# ~1,400 tokens/s kfr reaches today on this shape); one epoch checks the same code paths.
_ONE_EPOCH = ("finetune.epochs=1",)
CELLS: tuple[CellSpec, ...] = (
    CellSpec(
        "base_fp32", "base, short contexts, float32", ("method=base", "model.dtype=float32"), 30
    ),
    CellSpec(
        "base_bf16", "base, short contexts, bfloat16", ("method=base", "model.dtype=bfloat16"), 30
    ),
    CellSpec(
        "base_long_fp32",
        f"base, {LONG_SHOTS}-shot (~300-token contexts: cached path), float32",
        ("method=base", "model.dtype=float32", f"eval.shots={LONG_SHOTS}"),
        35,
        long_context=True,
    ),
    CellSpec(
        "base_long_bf16",
        f"base, {LONG_SHOTS}-shot (~300-token contexts: cached path), bfloat16",
        ("method=base", "model.dtype=bfloat16", f"eval.shots={LONG_SHOTS}"),
        35,
        long_context=True,
    ),
    CellSpec(
        "ft_full",
        "ft, full, trainer=gpu (bf16-mixed)",
        ("method=ft", "finetune=full", *_FT),
        45,
        trains=True,
    ),
    CellSpec(
        "ft_lora", "ft, LoRA, trainer=gpu", ("method=ft", "finetune=lora", *_FT), 40, trains=True
    ),
    CellSpec(
        "ft_qlora",
        "ft, QLoRA (bitsandbytes nf4), trainer=gpu",
        ("method=ft", "finetune=qlora", *_FT),
        50,
        trains=True,
    ),
    CellSpec(
        "ft_lora_ddp",
        "ft, LoRA, trainer=ddp trainer.devices=1",
        ("method=ft", "finetune=lora", "trainer=ddp", "trainer.devices=1"),
        45,
        trains=True,
        distributed=True,
    ),
    CellSpec(
        "qa_ft",
        "qa_ft (QA pairs), full, trainer=gpu, 1 epoch",
        ("method=qa_ft", *_FT, *_ONE_EPOCH),
        60,
        trains=True,
    ),
    CellSpec(
        "distill",
        "distill (context distillation), full, trainer=gpu, 1 epoch",
        ("method=distill", *_FT, *_ONE_EPOCH),
        60,
        trains=True,
    ),
    CellSpec("rag", "rag, FAISS on the CPU", ("method=rag",), 35, retrieves=True),
    CellSpec(
        "raft",
        "raft, full, trainer=gpu, FAISS on the CPU, 1 epoch",
        ("method=raft", *_FT, *_ONE_EPOCH),
        60,
        retrieves=True,
        trains=True,
    ),
    CellSpec(
        "ft_full_fsdp",
        "ft, full, trainer=fsdp trainer.devices=1",
        ("method=ft", "finetune=full", "trainer=fsdp", "trainer.devices=1"),
        50,
        trains=True,
        distributed=True,
        dry_skip="Lightning refuses FSDP on the CPU (kfr.finetune.settings refuses it first)",
    ),
    # kfr against Trainer / peft / lm-eval at SmolLM2 and 7B shape (benchmarks.gpu_bench): its
    # own results.json; longer than the check's default budget, so it runs only when asked for
    # (OPT_IN): `--only gpu_bench --budget 600`.
    CellSpec(
        "gpu_bench",
        "GPU benchmark: kfr vs peers",
        (),
        540,
        module="benchmarks.gpu_bench",
        alone=True,
    ),
)
BENCH_BUDGET_S = 450  # the benchmark starts no case after this (its box is BY_NAME's box_s)
OPT_IN = frozenset({"gpu_bench"})  # steps that run only when --only names them
BY_NAME = {c.name: c for c in CELLS}


def hydra_value(path: Path) -> str:
    """``path`` as a Hydra override value: quoted when it holds more than ``[\\w./-]``."""
    text = str(path)
    if re.fullmatch(r"[\w./-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cell_overrides(
    cell: CellSpec,
    *,
    dry: bool,
    tokenizer: Path,
    encoder: Path,
    cache_dir: Path,
    run_dir: Path,
    output_root: Path,
) -> list[str]:
    """The command line of ``cell`` after ``python3 -m cell.module``."""
    if cell.module == "benchmarks.gpu_bench":
        argv = ["--out", str(run_dir), "--tokenizer", str(tokenizer)]
        return [*argv, "--dry-run"] if dry else [*argv, "--budget", str(BENCH_BUDGET_S)]
    tokenizer, encoder, cache_dir, run_dir, output_root = (
        hydra_value(p) for p in (tokenizer, encoder, cache_dir, run_dir, output_root)
    )
    argv = [
        *cell.overrides,
        "model=tiny_llama",
        f"model.tokenizer={tokenizer}",
        "data=novel_facts",
        "logger=none",
        "eval.control=null",
        "eval.progress=false",
        f"paths.cache_dir={cache_dir}",
        f"paths.output_root={output_root}",
        f"hydra.run.dir={run_dir}",
    ]
    if cell.trains:
        argv += ["trainer.progress_bar=false", "trainer.checkpoint_every_min=0"]
    if cell.retrieves:
        argv += ["retriever.source=hf", f"retriever.path={encoder}"]
        argv.append(f"retriever.device={'cpu' if dry else 'cuda'}")
    if not dry:
        return [*argv, *SHAPE_135M, "model.device=cuda"]
    argv += ["model.device=cpu", f"data.novel_facts.n_entities={DRY_ENTITIES}"]
    argv.append("eval.bootstrap_samples=100")
    if cell.trains:
        argv.append("finetune.epochs=1")
        if any(o.startswith("trainer=") for o in cell.overrides):
            argv.append("trainer.accelerator=cpu")  # the profile's precision stays (bf16-mixed)
    return argv


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def cell_figures(results: dict) -> tuple[dict[str, float], dict[str, str]]:
    """(numbers, strings) of a cell's results.json for the summary (kfr.cell.results)."""
    if results.get("benchmark") == "kfr gpu_bench":
        return bench_figures(results), {}
    metrics, timings = results.get("metrics") or {}, results.get("timings") or {}
    scoring, ft = results.get("scoring") or {}, results.get("finetune") or {}
    retrieval = results.get("retrieval") or {}
    figures: dict[str, Any] = {
        "acc": metrics.get("acc"),
        "n": metrics.get("n"),
        "questions_per_s": timings.get("questions_per_s"),
    }
    for key in ("data_s", "load_model_s", "score_s", "analysis_s", "total_s"):
        figures[f"timings.{key}"] = timings.get(key)
    if _number(scoring.get("tokens")) and _number(scoring.get("sequences")):
        figures["tokens_per_question"] = round(scoring["tokens"] / scoring["sequences"], 1)
    for key in ("tokens_per_s", "steps", "tokens", "wall_s", "devices"):
        figures[f"finetune.{key}"] = ft.get(key)
    figures["finetune.train_loss_first"] = ft.get("train_loss_first")
    figures["finetune.train_loss_last"] = ft.get("train_loss_last")
    figures["recall_at_k"] = metrics.get("recall_at_k")
    for key, value in (retrieval.get("timings") or {}).items():
        figures[f"retrieval.{key}"] = value
    numbers = {k: v for k, v in figures.items() if _number(v) is not None}
    text = {
        "scoring_device": scoring.get("device"),
        "precision": ft.get("precision"),
        "finetune_mode": ft.get("mode"),
        "encoder_device": retrieval.get("encoder_device"),
        "faiss_device": retrieval.get("faiss_device"),
    }
    return numbers, {k: str(v) for k, v in text.items() if v is not None}


def cell_problem(cell: CellSpec, results: dict, *, dry: bool) -> str | None:
    """What is wrong with a cell that exited 0: it must have run the path it is there for."""
    if cell.module == "benchmarks.gpu_bench":
        return None if results.get("exit_code") == 0 else "a comparison failed or disagreed"
    numbers, text = cell_figures(results)
    if not numbers.get("n"):
        return "results.json has no scored questions"
    device = text.get("scoring_device", "")
    if not dry and not device.startswith("cuda"):
        return f"scored on {device or 'an unknown device'}, not the GPU"
    if cell.trains and not numbers.get("finetune.steps"):
        return "no training steps in results.json"
    if cell.retrieves and "recall_at_k" not in numbers:
        return "no retrieval recall in results.json"
    per_question = numbers.get("tokens_per_question", 0)
    if cell.long_context and per_question < CACHED_PATH_MIN_CONTEXT:
        return (
            f"{per_question} tokens per question: below the cached path's {CACHED_PATH_MIN_CONTEXT}"
        )
    return None


def bench_figures(results: dict) -> dict[str, float]:
    """Per comparison of the GPU benchmark: kfr / peer, kfr's and the peer's MFU."""
    figures: dict[str, float] = {}
    for row in results.get("cases", []):
        if row.get("status") != "passed":
            continue
        share = "mfu" if row["kind"] == "fit" else "achieved_peak"
        figures[f"{row['name']}.ratio"] = row["ratio"]
        figures[f"{row['name']}.kfr_mfu"] = row["kfr"][share]
        figures[f"{row['name']}.peer_mfu"] = row["peer_side"][share]
    return figures

"""kfr at the GPU's speed: fine-tuning and scoring against their peers, in one process.

Fine-tuning (:mod:`benchmarks.gpu_bench_fit`): full and LoRA against ``transformers.Trainer``,
QLoRA against peft + ``Trainer``, at SmolLM2-135M's shape with blocks of 2048 and at Mistral-7B's
shape (LoRA, QLoRA). Scoring (:mod:`benchmarks.gpu_bench_score`): against lm-eval's HF backend
(``batch_size=auto``) on the same questions with ~20- and ~1000-token contexts, float32 and
bfloat16, with identical predictions checked. Every model has random weights created on the
device (SmolLM2's tokenizer; no checkpoint of the base written). Per case: steady-state
tokens/s (questions/s), MFU (achieved/peak) against the matmul peak measured in the same run at
the model's GEMM shapes (:func:`benchmarks.roofline.matmul_peak`: bf16 on a GPU), peak GPU
memory, the ratio to the peer. Run from the repository root::

    python -m benchmarks.gpu_bench --out DIR [--tokenizer DIR] [--only a,b] [--budget S]
    python -m benchmarks.gpu_bench --dry-run --out DIR   # every comparison, tiny, on the CPU

``--dry-run`` runs each comparison end to end at the dry sizes (2-layer model, blocks of 64, a
few steps and questions; float32 matmul peak of the CPU) so both sides, the accounting and the
table are exercised; its figures mean nothing. Writes ``results.json`` (``cases``: one row per
comparison, a failed one with its error) and ``gpu_bench.md``. Exit code 0: every case ran and
every scoring case's predictions agree; 1: otherwise; 2: no GPU without ``--dry-run``. A case
not started before ``--budget`` seconds is listed as skipped. The GPU check runs it as its
``gpu_bench`` step (:data:`benchmarks.gpu_cells.CELLS`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks import gpu_bench_fit as fit
from benchmarks import gpu_bench_score as score

BENCHMARK = "kfr gpu_bench"
CASES = (*fit.FIT_CASES, *score.SCORE_CASES)
NAMES = tuple(c.name for c in CASES)
PEAK_ROWS, DRY_PEAK_ROWS = 4096, 128  # tokens per GEMM of the peak measurement
RESULTS, TABLE = "results.json", "gpu_bench.md"


def _quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    for name in ("lightning.pytorch", "lightning.fabric", "lm_eval", "kfr"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Peaks:
    """The matmul peak per model shape, measured once, when a case of that shape first runs."""

    def __init__(self, device: str, vocab: int, dry: bool) -> None:
        self.device, self.vocab, self.dry = device, vocab, dry
        self.measured: dict[str, Any] = {}

    def __call__(self, shape: str):
        if shape not in self.measured:
            from benchmarks.roofline import matmul_peak

            rows = DRY_PEAK_ROWS if self.dry else PEAK_ROWS
            gemms = fit.model_shape(shape, self.vocab).gemm_shapes(rows)
            seconds = 0.02 if self.dry else 0.3
            self.measured[shape] = matmul_peak(gemms, device=self.device, seconds_per_shape=seconds)
            print(f"  {shape}: {self.measured[shape].describe()}", flush=True)
        return self.measured[shape]


def run_cases(args: argparse.Namespace, out: Path, device: str, cache_dir: Path) -> dict:
    from kfr.models.loading import load_tokenizer

    wanted = set(args.only.split(",")) if args.only else set(NAMES)
    if unknown := wanted - set(NAMES):
        raise SystemExit(f"gpu_bench: unknown case(s) {sorted(unknown)}; cases: {','.join(NAMES)}")
    cases = [c for c in CASES if c.name in wanted]
    if args.dry_run:
        cases = [(fit if c.name.startswith("fit_") else score).dry_case(c) for c in cases]
    tok_cfg = score.model_config(score.SCORE_CASES[0], device="cpu", tokenizer=args.tokenizer)
    peaks = Peaks(device, len(load_tokenizer(tok_cfg, cache_dir)), args.dry_run)
    report = _header(args, device)
    started, seen = time.monotonic(), {}
    for case in cases:
        # At the dry shape a 7B case is its 135M twin: its plumbing has run already.
        twin = seen.setdefault(asdict(replace(case, name="")).__repr__(), case.name)
        if time.monotonic() - started > args.budget or twin != case.name:
            why = "budget" if twin == case.name else f"dry run: the same as {twin} at this shape"
            report["cases"].append({"name": case.name, "status": "skipped", "error": why})
            continue
        began = time.monotonic()
        runner = fit.run_fit if case.name.startswith("fit_") else score.run_score
        try:
            row = runner(
                case,
                device=device,
                tokenizer=args.tokenizer,
                cache_dir=cache_dir,
                peak=peaks(case.shape),
            )
            row["status"] = "passed"
        except Exception as err:  # one case's failure (an OOM, a missing peer) is its row
            traceback.print_exc()
            row = {
                "name": case.name,
                "status": "failed",
                "error": f"{type(err).__name__}: {err}"[:500],
            }
            fit._free(device)
        row["case"], row["seconds"] = asdict(case), round(time.monotonic() - began, 1)
        report["cases"].append(row)
        print(
            f"  {case.name:<24} {row['status']:<7} {row['seconds']:6.1f} s  {_brief(row)}",
            flush=True,
        )
        write(report, out)
    report["peaks"] = {k: asdict(v) for k, v in peaks.measured.items()}
    report["exit_code"] = exit_code(report)
    write(report, out)
    return report


def _header(args: argparse.Namespace, device: str) -> dict[str, Any]:
    import torch

    return {
        "benchmark": BENCHMARK,
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "cases": [],
    }


def exit_code(report: dict) -> int:
    for row in report["cases"]:
        if row.get("status") == "failed":
            return 1
        if row.get("kind") == "score" and row["same_predictions"] != row["questions"]:
            return 1
    return 0


def _brief(row: dict) -> str:
    if row.get("status") != "passed":
        return row.get("error", "")
    unit = "tokens_per_s" if row["kind"] == "fit" else "questions_per_s"
    return (
        f"kfr {row['kfr'][unit]:.1f} vs {row['peer']} {row['peer_side'][unit]:.1f} "
        f"({row['ratio']:.2f}x)"
    )


def markdown(report: dict) -> str:
    """The comparisons as one table; a failed or skipped case as its error."""
    head = (
        "| case | peer | kfr | peer | kfr / peer | kfr MFU | peer MFU | kfr peak MB | peer peak MB "
        "| same predictions |"
    )
    lines = [
        f"{BENCHMARK} on {report['device']} (torch {report['torch']})"
        + (": dry run, tiny shapes on the CPU, figures meaningless" if report["dry_run"] else ""),
        "",
        head,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["cases"]:
        if row.get("status") != "passed":
            lines.append(f"| {row['name']} | {row['status']}: {row.get('error', '')} |||||||||")
            continue
        ours, theirs = row["kfr"], row["peer_side"]
        if row["kind"] == "fit":
            unit, mfu, suffix, same = "tokens_per_s", "mfu", " tok/s", ""
            what = (
                f"{row['name']} ({row['mode']}, block {row['block']}, "
                f"{row['micro_batch']}x{row['accumulate']}, {row['precision']})"
            )
        else:
            unit, mfu, suffix = "questions_per_s", "achieved_peak", " q/s"
            what = (
                f"{row['name']} ({row['dtype']}, ~{row['context_tokens_mean']:.0f} tokens, "
                f"kfr batch {ours['batch']}, peer {theirs['batch']})"
            )
            same = (
                f"{row['same_predictions']}/{row['questions']} "
                f"(max Δ {row['max_abs_loglik_diff']:.1e})"
            )
        lines.append(
            f"| {what} | {row['peer']} | {ours[unit]:,.1f}{suffix} | {theirs[unit]:,.1f}{suffix} "
            f"| {row['ratio']:.2f}x | {ours[mfu]:.1%} | {theirs[mfu]:.1%} "
            f"| {ours['peak_memory_mb']:,} | {theirs['peak_memory_mb']:,} | {same} |"
        )
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((RESULTS, json.dumps(report, indent=1)), (TABLE, markdown(report))):
        (out / f".{name}.tmp").write_text(text + "\n", encoding="utf-8")
        (out / f".{name}.tmp").replace(out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results.json and gpu_bench.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--only", help=f"comma-separated cases of: {','.join(NAMES)}")
    parser.add_argument("--tokenizer", help="SmolLM2's tokenizer directory (default: embedded)")
    parser.add_argument("--budget", type=float, default=1e9, help="start no case after S seconds")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu_bench: no GPU (torch {torch.__version__}); --dry-run runs it on the CPU")
        return 2
    _quiet()
    device = "cpu" if args.dry_run else "cuda"
    with tempfile.TemporaryDirectory(prefix="kfr-gpu-bench-") as tmp:
        report = run_cases(args, args.out, device, fit.bench_cache(Path(tmp)))
    print(markdown(report))
    return report["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main())

"""One-call GPU check: every GPU path of kfr run once, timed, with one summary.

``benchmarks/gpu_check.sh`` picks (or sets up) the Python environment and calls ``run`` here;
``run`` needs only the standard library, so it can report a failed set-up too. Each step runs as
its own process group under coreutils ``timeout`` (a step that hangs costs its own time box, not
the others'), inside one overall budget (``--budget``, 450 s by default: with the set-up check
and the environment probe, 8 minutes):

========== ===================================================================================
prepare    convert the embedded SmolLM2 once, generate the novel-facts data the steps read
gpu_tests  ``pytest -m gpu`` on the test files that carry the marker
qlora      ``finetune=qlora trainer=gpu`` fits of SmolLM2-135M (bitsandbytes CUDA kernels):
           tokens/s (``benchmarks/train_throughput.py --device cuda``)
bf16_fits  a bf16 8192^3 matmul (the measured peak), then ``trainer=gpu`` (bf16-mixed) full
           and LoRA fits: tokens/s and MFU = 6 x parameters x tokens/s / peak, against the
           measured peak and against the datasheet's dense bf16 figure for the GPU, if known
faiss      the same FAISS indices built and searched on the GPU and on the CPU (kfr's
           ``build_index``): timings and the share of queries with identical top-K ids
ddp        ``kfr method=ft trainer=ddp trainer.devices=1``: a few steps, then scoring
eval       ``benchmarks/eval_throughput.py --device cuda``: kfr's and lm-eval's questions/s
           and the share of identical predictions
========== ===================================================================================

``--dry-run`` runs the same steps on the CPU with tiny settings (``model=tiny_llama``, a few
steps, float32, small FAISS indices); what needs a GPU is recorded as skipped. Outputs, in
``--out`` (default ``benchmarks/results/gpu_check-<date>-<time>/``): ``gpu_check.json`` (every
step's status, reason, duration, time box, commands and figures, plus the GPU, driver and library
versions), ``gpu_check.md`` (the same as tables) and ``gpu_check.log`` (every step's output).
The summary is rewritten after each step, so an interrupted run still leaves one. Exit code: 0
when every step passed or was skipped for a stated reason, 1 when one failed, 2 when there is no
GPU (without ``--dry-run``).

``worker`` sub-commands (``env``, ``prepare``, ``matmul``, ``faiss``) are the steps' own
measurements, run by ``run`` in the checked environment's Python.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
SUMMARY_JSON, SUMMARY_MD, SUMMARY_LOG = "gpu_check.json", "gpu_check.md", "gpu_check.log"

STEPS = ("prepare", "gpu_tests", "qlora", "bf16_fits", "faiss", "ddp", "eval")
TITLES = {
    "prepare": "embedded model converted, novel-facts data generated",
    "gpu_tests": "pytest -m gpu",
    "qlora": "QLoRA fit (finetune=qlora trainer=gpu, bitsandbytes CUDA kernels)",
    "bf16_fits": "bf16 matmul peak; bf16-mixed full and LoRA fits: tokens/s, MFU",
    "faiss": "FAISS on the GPU against the CPU: same top-K",
    "ddp": "DDP on 1 GPU (kfr method=ft trainer=ddp trainer.devices=1)",
    "eval": "kfr vs lm-eval scoring throughput on the GPU",
}
# Seconds per step: on the GPU they add up to 440 of the default 450 s budget, which leaves the
# environment probe and the set-up check inside 8 minutes (every step pays for its own Python
# start-up). Dry runs share 2 CPU cores with other work: more room.
TIME_BOX = {
    "prepare": 40,
    "gpu_tests": 90,
    "qlora": 50,
    "bf16_fits": 85,
    "faiss": 35,
    "ddp": 65,
    "eval": 75,
}
DRY_TIME_BOX = {name: 240 for name in STEPS}
DEFAULT_BUDGET_S, DRY_BUDGET_S = 450, 1200
KILL_AFTER_S = 10  # timeout's SIGKILL after its SIGTERM

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from NVIDIA's datasheets; the first name
# contained in the device name wins (so longer, more specific names come first).
DATASHEET_BF16_TFLOPS = (
    ("GH200", 989.4),
    ("H200 NVL", 835.5),
    ("H200", 989.4),  # H200 SXM
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),  # H100 SXM (HBM3)
    ("H800", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
)

# ----------------------------------------------------------------------------- helpers


def datasheet_bf16_tflops(device_name: str | None) -> tuple[float | None, str | None]:
    """(TFLOP/s, the datasheet entry it came from) for a torch device name; (None, None)."""
    for name, tflops in DATASHEET_BF16_TFLOPS:
        if device_name and name.lower() in device_name.lower():
            return tflops, name
    return None, None


def mfu(parameters: float, tokens_per_s: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation in percent: 6 x parameters x tokens/s over the peak."""
    return 100.0 * 6.0 * parameters * tokens_per_s / (peak_tflops * 1e12)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# ----------------------------------------------------------------------------- steps


@dataclass
class Command:
    argv: list[str]
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class StepResult:
    name: str
    title: str
    status: str = "skipped"  # passed | failed | skipped
    reason: str = "not run"  # why it failed or was skipped; passed: a note or ""
    duration_s: float = 0.0
    time_box_s: float = 0.0
    commands: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def set(self, status: str, reason: str = "") -> StepResult:
        self.status, self.reason = status, reason
        return self

    def figure(self, name: str, value: Any, digits: int = 4) -> None:
        if is_number(value):
            self.figures[name] = round(float(value), digits) if isinstance(value, float) else value


class Context:
    """What the steps share: the worker Python, the work folder, the settings of this run."""

    def __init__(self, args: argparse.Namespace, work: Path, env_info: dict) -> None:
        self.args = args
        self.dry = bool(args.dry_run)
        self.py = args.python
        self.work = work
        self.env_info = env_info
        self.cache_dir = Path(env_info.get("kfr_cache_dir") or work / "cache")
        self.deadline = time.monotonic() + args.budget
        self.log = work / "logs"
        self.log.mkdir(parents=True, exist_ok=True)

    # Settings that differ between the GPU run and the dry run.
    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    @property
    def entities(self) -> int:
        """Novel-facts people for the throughput fits: enough text for their steps."""
        return 4 if self.dry else 600

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, step: StepResult, command: Command, limit: float) -> int:
        """Run one command under ``timeout`` (its own process group), output to the step's log."""
        log = self.log / f"{step.name}.log"
        seconds = max(1, int(limit))
        argv = [
            "timeout",
            f"--kill-after={KILL_AFTER_S}",
            str(seconds),
            *command.argv,
        ]
        shown = " ".join(_quote(a) for a in command.argv)
        step.commands.append(shown)
        env = {**os.environ, **_worker_env(), **command.env}
        with log.open("a", encoding="utf-8") as out:
            out.write(f"$ {shown}   # time box {seconds} s\n")
            out.flush()
            try:
                done = subprocess.run(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=seconds + KILL_AFTER_S + 30,
                    check=False,
                )
                rc = done.returncode
            except subprocess.TimeoutExpired:  # timeout itself stuck: should not happen
                rc = 124
            out.write(f"# exit code {rc}\n\n")
        return rc


def _quote(text: str) -> str:
    return text if re.fullmatch(r"[\w@%+=:,./-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def _worker_env() -> dict[str, str]:
    return {
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "HF_DATASETS_OFFLINE": os.environ.get("HF_DATASETS_OFFLINE", "1"),
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
    }


def _run_all(step: StepResult, ctx: Context, commands: Sequence[Command]) -> str | None:
    """Run ``commands`` in order within the step's time box; the failure's reason, or None."""
    box_end = time.monotonic() + step.time_box_s
    for command in commands:
        limit = min(box_end, ctx.deadline) - time.monotonic()
        if limit < 1:
            return f"time box of {step.time_box_s:.0f} s used up before: {command.name}"
        rc = ctx.run(step, command, limit)
        if rc != 0:
            step.details["log_tail"] = _tail(ctx.log / f"{step.name}.log")
        if rc in (124, 137):  # timeout's TERM, then KILL (137 is also what an OOM kill gives)
            return f"timed out after {limit:.0f} s: {command.name or command.argv[0]}"
        if rc != 0:
            return f"exit code {rc}: {command.name or command.argv[0]}"
    return None


def _me(ctx: Context, *worker_args: str) -> Command:
    return Command(
        [ctx.py, "-m", "benchmarks.gpu_check", "worker", *worker_args], name=worker_args[0]
    )


def step_prepare(step: StepResult, ctx: Context) -> StepResult:
    entities = [40, ctx.entities] if ctx.entities != 40 else [40]
    argv = ["prepare", "--entities", *map(str, entities)]
    failure = _run_all(step, ctx, [_me(ctx, *argv)])
    return step.set("failed", failure) if failure else step.set("passed")


def gpu_test_files() -> list[str]:
    """Test files that carry the ``gpu`` marker (collecting only them saves the imports)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if re.search(r"\bmark\.gpu\b", path.read_text(encoding="utf-8", errors="replace")):
            found.append(str(path.relative_to(ROOT)))
    return found or ["tests"]


def step_gpu_tests(step: StepResult, ctx: Context) -> StepResult:
    junit = ctx.work / "gpu_tests.xml"
    argv = [ctx.py, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    argv += [f"--junitxml={junit}", *gpu_test_files()]
    failure = _run_all(step, ctx, [Command(argv, name="pytest -m gpu")])
    counts = junit_counts(junit)
    for name in ("tests", "passed", "failed", "errors", "skipped"):
        step.figure(name, counts.get(name))
    step.details["skip_reasons"] = counts.get("skip_reasons", {})
    if counts and (counts["failed"] or counts["errors"]):
        return step.set("failed", f"{counts['failed']} failed, {counts['errors']} errors")
    if failure:
        return step.set("failed", failure)
    if not counts:
        return step.set("failed", "pytest wrote no report")
    if ctx.dry:
        return step.set("passed", f"dry run: {counts['skipped']} skipped without CUDA")
    if counts["passed"] == 0:
        return step.set("failed", "no gpu test ran: every one was skipped")
    return step.set("passed")


def junit_counts(path: Path) -> dict[str, Any]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    counts: dict[str, Any] = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    reasons: dict[str, str] = {}
    for case in root.iter("testcase"):
        counts["tests"] += 1
        name = f"{case.get('classname', '')}.{case.get('name', '')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
        elif case.find("error") is not None:
            counts["errors"] += 1
        elif (skipped := case.find("skipped")) is not None:
            counts["skipped"] += 1
            reasons[name] = skipped.get("message", "")
        else:
            counts["passed"] += 1
    counts["skip_reasons"] = reasons
    return counts


def _throughput_argv(ctx: Context, modes: Sequence[str], steps: int, out: Path) -> list[str]:
    if ctx.dry:
        shape = ["--model", "tiny_llama", "--steps", "3", "--block-size", "32"]
        shape += ["--micro-batch", "2", "--accumulate", "1"]
    else:
        # 16 x 1024-token blocks a step: big enough steps for the GPU to be busy. 600 people
        # of novel facts with their 8 paraphrases are about 550k tokens: 33 such steps.
        shape = ["--model", "smollm2_135m", "--steps", str(steps), "--block-size", "1024"]
        shape += ["--micro-batch", "16", "--accumulate", "1"]
        shape += ["--precision", "bf16-mixed"]
    return [
        ctx.py,
        "-m",
        "benchmarks.train_throughput",
        "--device",
        ctx.device,
        "--modes",
        *modes,
        *shape,
        "--entities",
        str(ctx.entities),
        "--repeats",
        "1",
        "--no-peer",
        "--json",
        str(out),
    ]


def _fit_figures(step: StepResult, report: dict | None) -> str | None:
    """Tokens/s, parameters and losses of each mode; the reason when something is off."""
    if not report or not report.get("modes"):
        return "train_throughput wrote no figures"
    for row in report["modes"]:
        mode = row["mode"]
        for key in ("kfr_tokens_per_s", "timed_steps", "tokens_per_step", "parameters"):
            step.figure(f"{mode}.{key}", row.get(key))
        step.figure(f"{mode}.trainable_parameters", row.get("trainable_parameters"))
        step.figure(f"{mode}.train_loss_first", row.get("train_loss_first"))
        step.figure(f"{mode}.train_loss_last", row.get("train_loss_last"))
        if not (is_number(row.get("kfr_tokens_per_s")) and row["kfr_tokens_per_s"] > 0):
            return f"{mode}: no tokens/s"
        if not is_number(row.get("train_loss_last")):
            return f"{mode}: the loss is not a finite number"
    step.details["train_throughput"] = {k: v for k, v in report.items() if k != "modes"}
    return None


def step_qlora(step: StepResult, ctx: Context) -> StepResult:
    out = ctx.work / "qlora.json"
    failure = _run_all(step, ctx, [Command(_throughput_argv(ctx, ["qlora"], 12, out), "qlora fit")])
    problem = failure or _fit_figures(step, _read_json(out))
    if problem:
        return step.set("failed", problem)
    if ctx.dry:
        return step.set("passed", "dry run: QLoRA on the CPU (bitsandbytes CPU kernels), float32")
    return step.set("passed")


def step_bf16_fits(step: StepResult, ctx: Context) -> StepResult:
    matmul_out, fits_out = ctx.work / "matmul.json", ctx.work / "fits.json"
    if ctx.dry:
        matmul = _me(ctx, "matmul", "--size", "512", "--dtype", "float32", "--device", "cpu")
    else:
        matmul = _me(ctx, "matmul", "--size", "8192", "--dtype", "bfloat16", "--device", "cuda")
    matmul.argv += ["--json", str(matmul_out)]
    fits = Command(_throughput_argv(ctx, ["full", "lora"], 24, fits_out), "full and lora fits")
    failure = _run_all(step, ctx, [matmul, fits])
    peak = _read_json(matmul_out) or {}
    measured = peak.get("tflops")
    step.figure("matmul_size", peak.get("size"))
    step.figure("peak_tflops_measured", measured, 3)
    device_name = ctx.env_info.get("gpu_name")
    datasheet, entry = (None, None) if ctx.dry else datasheet_bf16_tflops(device_name)
    step.figure("peak_tflops_datasheet", datasheet, 3)
    step.details["peak"] = {
        "measured": f"{peak.get('dtype')} {peak.get('size')}^3 matmul on {peak.get('device')}",
        "datasheet": f"NVIDIA {entry}, dense bf16" if entry else "none known for this device",
    }
    problem = failure or _fit_figures(step, _read_json(fits_out))
    for mode in ("full", "lora"):
        tps = step.figures.get(f"{mode}.kfr_tokens_per_s")
        params = step.figures.get(f"{mode}.parameters")
        if tps and params and measured:
            step.figure(f"{mode}.mfu_pct_measured_peak", mfu(params, tps, measured), 2)
        if tps and params and datasheet:
            step.figure(f"{mode}.mfu_pct_datasheet_peak", mfu(params, tps, datasheet), 2)
    step.details["mfu"] = (
        "6 x all parameters x tokens/s / peak; for LoRA (no weight gradients of the frozen "
        "base) the work really done is nearer 4 x parameters"
    )
    if problem:
        return step.set("failed", problem)
    if not is_number(measured):
        return step.set("failed", "no matmul peak measured")
    if ctx.dry:
        return step.set("passed", "dry run: float32 on the CPU, MFU against a CPU float32 matmul")
    return step.set("passed")


def step_faiss(step: StepResult, ctx: Context) -> StepResult:
    out = ctx.work / "faiss.json"
    size = ["--vectors", "5000", "--queries", "200"] if ctx.dry else []
    gpu = ["--no-gpu"] if ctx.dry else []
    command = _me(ctx, "faiss", *size, *gpu, "--json", str(out))
    failure = _run_all(step, ctx, [command])
    report = _read_json(out) or {}
    step.details.update({k: report.get(k) for k in ("faiss", "package", "gpu_support")})
    for name in ("vectors", "dim", "queries", "k", "faiss_gpus"):
        step.figure(name, report.get(name))
    for row in report.get("indices", []):
        for key, value in row.items():
            step.figure(f"{row['spec']}.{key}", value)
    if failure:
        return step.set("failed", failure)
    if not report:
        return step.set("failed", "the faiss worker wrote no figures")
    if report.get("skip_reason"):
        return step.set("skipped", report["skip_reason"])
    problems = [p for row in report.get("indices", []) for p in row.get("problems", [])]
    if problems:
        return step.set("failed", "; ".join(problems))
    return step.set("passed")


def step_ddp(step: StepResult, ctx: Context) -> StepResult:
    run_dir, cache = ctx.work / "ddp_run", ctx.work / "ddp_cache"
    cache.mkdir(parents=True, exist_ok=True)
    models = ctx.cache_dir / "models"  # the converted model; checkpoints start empty
    if models.is_dir() and not (cache / "models").exists():
        (cache / "models").symlink_to(models, target_is_directory=True)
    overrides = [
        "method=ft",
        "trainer=ddp",
        "trainer.devices=1",
        "finetune.epochs=1",
        "eval.control=null",
        "data.limit=48",
        "logger=csv",
        "trainer.progress_bar=false",
        "eval.progress=false",
        "trainer.checkpoint_every_min=0",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
    ]
    if ctx.dry:
        overrides += [
            "model=tiny_llama",
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "data.novel_facts.n_entities=4",
            "finetune.block_size=32",
            "trainer.micro_batch_size=2",
        ]
    else:  # the defaults: blocks of 128, batch 4 (about 8 steps over the 40 documents)
        overrides += ["model=smollm2_135m"]
    command = Command([ctx.py, "-m", "kfr.cli", *overrides], name="kfr method=ft trainer=ddp")
    failure = _run_all(step, ctx, [command])
    results = _read_json(run_dir / "results.json") or {}
    ft = results.get("finetune") or {}
    for key in ("steps", "devices", "tokens", "tokens_per_s", "wall_s", "train_loss_first"):
        step.figure(key, ft.get(key))
    step.figure("train_loss_last", ft.get("train_loss_last"))
    step.figure("acc", (results.get("metrics") or {}).get("acc"))
    step.details["precision"] = ft.get("precision")
    step.details["scoring_device"] = (results.get("scoring") or {}).get("device")
    if failure:
        return step.set("failed", failure)
    if not ft:
        return step.set("failed", f"no results.json with a finetune part in {run_dir}")
    if not ft.get("steps") or ft.get("devices") != 1:
        return step.set("failed", f"trained {ft.get('steps')} steps on {ft.get('devices')} devices")
    if ctx.dry:
        return step.set("passed", "dry run: DDP on the CPU (gloo), tiny_llama")
    return step.set("passed")


def step_eval(step: StepResult, ctx: Context) -> StepResult:
    if not ctx.env_info.get("lm_eval"):
        return step.set("skipped", "lm-eval not installed (the dev extra: pip install lm-eval)")
    out = ctx.work / "eval.json"
    if ctx.dry:
        shape = ["--questions", "4", "--rag-questions", "2", "--context-tokens", "200"]
        shape += ["--batch-size", "4", "--threads", "1"]
    else:
        shape = ["--questions", "240", "--rag-questions", "48", "--batch-size", "16"]
    argv = [ctx.py, "-m", "benchmarks.eval_throughput", "--device", ctx.device, *shape]
    failure = _run_all(step, ctx, [Command([*argv, "--out", str(out)], "eval_throughput")])
    report = _read_json(out) or {}
    problems = []
    for row in report.get("rows", []):
        name = row["workload"].split()[0]  # short | rag
        for key in ("questions", "context_tokens", "batch_size", "kfr_qps", "lm_eval_qps"):
            step.figure(f"{name}.{key}", row.get(key), 2)
        for key in ("ratio", "same_acc_pct", "same_acc_norm_pct", "max_abs_ll_diff"):
            step.figure(f"{name}.{key}", row.get(key), 6)
        if not is_number(row.get("same_acc_pct")) or row["same_acc_pct"] < 95.0:
            problems.append(f"{name}: only {row.get('same_acc_pct')}% identical predictions")
    if failure:
        return step.set("failed", failure)
    if not report.get("rows"):
        return step.set("failed", "eval_throughput wrote no rows")
    if problems:
        return step.set("failed", "; ".join(problems))
    return step.set("passed", "dry run: on the CPU" if ctx.dry else "")


STEP_FUNCTIONS: dict[str, Callable[[StepResult, Context], StepResult]] = {
    "prepare": step_prepare,
    "gpu_tests": step_gpu_tests,
    "qlora": step_qlora,
    "bf16_fits": step_bf16_fits,
    "faiss": step_faiss,
    "ddp": step_ddp,
    "eval": step_eval,
}

# ----------------------------------------------------------------------------- summary


def exit_code(setup: dict, steps: Sequence[StepResult]) -> int:
    failed = setup.get("status") == "failed" or any(s.status == "failed" for s in steps)
    return 1 if failed else 0


def summary(
    args: argparse.Namespace,
    started: str,
    wall_s: float,
    setup: dict,
    env_info: dict,
    steps: Sequence[StepResult],
    finished: bool,
) -> dict:
    return {
        "check": "kfr gpu_check",
        "started": started,
        "finished": _now() if finished else None,
        "complete": finished,
        "duration_s": round(wall_s, 1),
        "dry_run": bool(args.dry_run),
        "budget_s": args.budget,
        "exit_code": exit_code(setup, steps) if finished else None,
        "setup": setup,
        "environment": env_info,
        "steps": [vars(s) for s in steps],
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    env = report.get("environment") or {}
    setup = report.get("setup") or {}
    mode = "dry run (CPU, tiny settings)" if report["dry_run"] else "GPU"
    lines = [
        f"# kfr GPU check: {mode}",
        "",
        f"Started {report['started']}, {report['duration_s']} s, budget {report['budget_s']} s, "
        f"exit code {report['exit_code']}" + ("" if report["complete"] else " (incomplete)"),
        "",
        "| | |",
        "|---|---|",
        f"| setup | {_cell(setup.get('status'))}: {_cell(setup.get('note', ''))} "
        f"({_cell(setup.get('duration_s', 0))} s) |",
    ]
    for key in (
        "gpu_name",
        "gpu_memory_gib",
        "driver",
        "torch",
        "torch_cuda",
        "cudnn",
        "python",
        "transformers",
        "lightning",
        "peft",
        "bitsandbytes",
        "bitsandbytes_cuda",
        "faiss",
        "faiss_package",
        "lm_eval",
    ):
        if env.get(key) is not None:
            lines.append(f"| {key} | {_cell(env[key])} |")
    lines += [
        "",
        "| step | status | s | time box s | reason | figures |",
        "|---|---|---:|---:|---|---|",
    ]
    for step in report["steps"]:
        figures = ", ".join(f"{k} {_cell(v)}" for k, v in step["figures"].items())
        lines.append(
            f"| {step['name']} | {step['status']} | {step['duration_s']:.1f} "
            f"| {step['time_box_s']:.0f} | {_cell(step['reason'])} | {figures} |"
        )
    lines += ["", "## Commands", ""]
    for step in report["steps"]:
        for command in step["commands"]:
            lines.append(f"- {step['name']}: `{command}`")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, report: dict, logs: Sequence[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        (SUMMARY_JSON, json.dumps(report, indent=2) + "\n"),
        (SUMMARY_MD, markdown(report)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)
    with (out / SUMMARY_LOG).open("w", encoding="utf-8") as combined:
        for log in logs:
            if log.is_file():
                combined.write(f"===== {log.stem} =====\n")
                combined.write(log.read_text(encoding="utf-8", errors="replace"))
                combined.write("\n")


def _environment(args: argparse.Namespace, work: Path) -> dict:
    out, log = work / "env.json", work / "logs" / "env.log"
    argv = [args.python, "-m", "benchmarks.gpu_check", "worker", "env", "--json", str(out)]
    if not args.dry_run:
        argv.append("--cuda")
    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        log.open("w", encoding="utf-8") as handle,
        contextlib.suppress(subprocess.TimeoutExpired),
    ):
        subprocess.run(
            ["timeout", "120", *argv],
            cwd=ROOT,
            env={**os.environ, **_worker_env()},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=150,
            check=False,
        )
    info = _read_json(out) or {"error": "the environment probe failed: " + _tail(log, 5)}
    info.setdefault("driver", nvidia_smi_driver())
    return info


def nvidia_smi_driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = done.stdout.strip().splitlines()[:1]
    return first[0].split(",")[-1].strip() if first and done.returncode == 0 else None


def _selected(text: str | None) -> list[str]:
    if not text:
        return list(STEPS)
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        raise SystemExit(f"gpu_check: unknown step(s) {unknown}; the steps: {', '.join(STEPS)}")
    return chosen


def run(args: argparse.Namespace) -> int:
    steps_wanted = _selected(args.steps)
    if args.budget is None:
        args.budget = DRY_BUDGET_S if args.dry_run else DEFAULT_BUDGET_S
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS_DIR / f"gpu_check-{stamp}"
    setup = {
        "status": args.setup_status,
        "note": args.setup_note,
        "duration_s": args.setup_seconds,
        "python": args.python,
    }
    started, clock = _now(), time.monotonic()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kfr-gpu-check-", dir=args.work))
    logs = [Path(args.setup_log)] if args.setup_log else []
    env_info: dict = {}
    results = [StepResult(name, TITLES[name]) for name in STEPS]

    def save(finished: bool) -> None:
        report = summary(
            args, started, time.monotonic() - clock, setup, env_info, results, finished
        )
        write_summary(out, report, [*logs, work / "logs" / "env.log", *step_logs])

    step_logs = [work / "logs" / f"{name}.log" for name in STEPS]
    try:
        if args.setup_status == "failed":
            for step in results:
                step.set("skipped", "the set-up failed: nothing to run the steps with")
            save(True)
            print(f"gpu_check: set-up failed ({args.setup_note}); summary in {out}")
            return 1
        env_info = _environment(args, work)
        if not args.dry_run and not env_info.get("cuda_available"):
            reason = env_info.get("cuda_reason") or env_info.get("error") or "no CUDA device"
            print(f"gpu_check: no usable GPU ({reason}); --dry-run tests the plumbing on the CPU")
            return 2
        ctx = Context(args, work, env_info)
        print(f"gpu_check: {'dry run' if ctx.dry else env_info.get('gpu_name')}; summary in {out}")
        for step in results:
            if step.name not in steps_wanted:
                step.set("skipped", "not selected (--steps)")
                continue
            box = DRY_TIME_BOX[step.name] if ctx.dry else TIME_BOX[step.name]
            step.time_box_s = float(min(box, max(0.0, ctx.remaining())))
            if step.time_box_s < 5:
                step.set("failed", f"not run: the {args.budget} s budget was used up")
            else:
                began = time.monotonic()
                try:
                    STEP_FUNCTIONS[step.name](step, ctx)
                except Exception as err:  # a bug in the step's own bookkeeping
                    step.set("failed", f"gpu_check error: {type(err).__name__}: {err}")
                step.duration_s = round(time.monotonic() - began, 1)
            print(
                f"  {step.name:<10} {step.status:<8} {step.duration_s:6.1f} s  {step.reason}",
                flush=True,
            )
            save(False)
        save(True)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    code = exit_code(setup, results)
    print(f"gpu_check: exit {code}; {out / SUMMARY_JSON}, {out / SUMMARY_MD}, {out / SUMMARY_LOG}")
    return code


# ----------------------------------------------------------------------------- workers
# These run in the environment under test (heavy imports inside the functions).


def worker_env(args: argparse.Namespace) -> None:
    import importlib.metadata as metadata
    import platform

    from platformdirs import user_cache_dir

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "kfr_cache_dir": os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"),
    }
    for dist in ("transformers", "lightning", "peft", "bitsandbytes", "lm_eval", "kfr"):
        info[dist] = version(dist.replace("_", "-"))
    faiss_dists = [d for d in ("faiss-gpu-cu12", "faiss-gpu", "faiss-cpu") if version(d)]
    info["faiss_package"] = ", ".join(f"{d} {version(d)}" for d in faiss_dists) or None
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError as err:
        info["faiss"], info["faiss_gpus"] = None, 0
        info["faiss_error"] = str(err)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["cudnn"] = torch.backends.cudnn.version()
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        if args.cuda:
            info["bitsandbytes_cuda"] = _bitsandbytes_on_cuda()
    elif torch.version.cuda is None:
        info["cuda_reason"] = f"torch {torch.__version__} is a CPU-only build"
    else:
        info["cuda_reason"] = "torch.cuda.is_available() is False"
    info["driver"] = nvidia_smi_driver()
    Path(args.json).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(info, indent=2))


def _bitsandbytes_on_cuda() -> bool | str:
    """Whether bitsandbytes quantises a tensor on the GPU (its CUDA kernels load)."""
    try:
        import bitsandbytes.functional as F
        import torch

        x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
        packed, state = F.quantize_4bit(x, quant_type="nf4")
        back = F.dequantize_4bit(packed, state, quant_type="nf4")
        torch.cuda.synchronize()
        return bool(torch.isfinite(back).all().item())
    except Exception as err:
        return f"{type(err).__name__}: {err}"


def worker_prepare(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from kfr.core.schema import ModelConfig
    from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts
    from kfr.models.loading import base_checkpoint, load_tokenizer

    cache_dir = Path(os.environ.get("KFR_CACHE_DIR") or _user_cache())
    for name in ("smollm2_135m", "tiny_llama"):
        conf = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), conf))
        started = time.perf_counter()
        if name == "smollm2_135m":
            print(f"{name}: {base_checkpoint(cfg, cache_dir)[0]}", end=" ")
        load_tokenizer(cfg, cache_dir)
        print(f"({name} ready in {time.perf_counter() - started:.1f} s)", flush=True)
    for n in args.entities:
        started = time.perf_counter()
        where = ensure_novel_facts(NovelFactsSpec(n_entities=n), cache_dir)
        print(f"novel facts, {n} people: {where} ({time.perf_counter() - started:.1f} s)")


def _user_cache() -> str:
    from platformdirs import user_cache_dir

    return user_cache_dir("kfr")


def worker_matmul(args: argparse.Namespace) -> None:
    import torch

    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (args.size, args.size)
    a = torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)
    b = torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        torch.matmul(a, b)
    sync()
    started = time.perf_counter()
    for _ in range(args.repeats):
        torch.matmul(a, b)
    sync()
    seconds = (time.perf_counter() - started) / args.repeats
    tflops = 2 * args.size**3 / seconds / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {
        "size": args.size,
        "dtype": args.dtype,
        "device": name,
        "repeats": args.repeats,
        "seconds_per_matmul": seconds,
        "tflops": tflops,
    }
    print(json.dumps(report, indent=2))
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _faiss_package() -> str:
    import importlib.metadata as metadata

    for dist in ("faiss-gpu-cu12", "faiss-gpu", "faiss-cpu"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown (not from pip)"


def worker_faiss(args: argparse.Namespace) -> None:
    import faiss
    import numpy as np

    from benchmarks.retrieval import clustered_vectors, ivf_spec, nearby_queries
    from kfr.retrieval.faiss_index import (
        apply_search_params,
        build_index,
        search,
        search_params,
        to_gpus,
    )

    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    package = _faiss_package()
    skip_reason = None
    if n_gpus == 0:
        skip_reason = (
            f"faiss without GPU support (pip {package.split()[0]}); "
            "GPU FAISS comes from faiss-gpu-cu12 (the gpu extra)"
            if "gpu" not in package
            else f"{package} sees no GPU"
        )
    elif args.no_gpu:
        skip_reason = "dry run: GPU FAISS not tried (CPU figures only)"
    vectors = clustered_vectors(args.vectors)
    queries = nearby_queries(vectors, args.queries)
    k = args.k

    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        started = time.perf_counter()
        result = fn()
        return time.perf_counter() - started, result

    def same(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        ordered = float(np.mean([list(x) == list(y) for x, y in zip(a, b, strict=True)]))
        as_set = float(np.mean([set(x) == set(y) for x, y in zip(a, b, strict=True)]))
        return ordered, as_set

    def recall(found: np.ndarray, exact: np.ndarray) -> float:
        hits = [len(set(x) & set(y)) / k for x, y in zip(found, exact, strict=True)]
        return float(np.mean(hits))

    rows, exact = [], None
    for spec in ("Flat", ivf_spec(args.vectors)):
        row: dict[str, Any] = {"spec": spec, "problems": []}
        build_s, (cpu_index, _) = timed(lambda spec=spec: build_index(vectors, spec))
        params = search_params(cpu_index, None, None)
        apply_search_params(cpu_index, params, on_gpu=False)
        search_s, (_, cpu_ids) = timed(lambda index=cpu_index: search(index, queries, k))
        exact = cpu_ids if exact is None else exact
        row.update(cpu_build_s=build_s, cpu_qps=len(queries) / search_s)
        row["cpu_recall_vs_flat"] = recall(cpu_ids, exact)
        if skip_reason is None:
            build_s, (built, report) = timed(lambda spec=spec: build_index(vectors, spec, [0]))
            row["gpu_build_s"] = build_s
            row["built_on_gpu"] = int(report.device != "cpu")
            for label, index in (("gpu_built", built), ("same_index", cpu_index)):
                on_gpu = to_gpus(index, [0])
                if on_gpu is None:
                    row["problems"].append(f"{spec}: no GPU copy of the index")
                    continue
                apply_search_params(on_gpu, search_params(index, None, None), on_gpu=True)
                search(on_gpu, queries[:16], k)  # warm-up
                search_s, (_, gpu_ids) = timed(lambda on_gpu=on_gpu: search(on_gpu, queries, k))
                ordered, as_set = same(gpu_ids, cpu_ids)
                row[f"{label}_gpu_qps"] = len(queries) / search_s
                row[f"{label}_identical_topk_ordered"] = ordered
                row[f"{label}_identical_topk_set"] = as_set
                row[f"{label}_gpu_recall_vs_flat"] = recall(gpu_ids, exact)
            if row.get("same_index_identical_topk_set", 1.0) < 0.95:
                row["problems"].append(f"{spec}: GPU and CPU search of one index disagree")
            if spec == "Flat" and row.get("gpu_built_identical_topk_set", 1.0) < 0.95:
                row["problems"].append("Flat: GPU-built top-K differs from the CPU's")
            if row.get("gpu_built_gpu_recall_vs_flat", 1.0) < 0.9:
                row["problems"].append(f"{spec}: GPU-built recall@{k} below 0.9")
        rows.append(row)
    report = {
        "faiss": faiss.__version__,
        "package": package,
        "faiss_gpus": n_gpus,
        "gpu_support": skip_reason is None,
        "skip_reason": skip_reason,
        "vectors": args.vectors,
        "dim": int(vectors.shape[1]),
        "queries": args.queries,
        "k": k,
        "indices": rows,
    }
    print(json.dumps(report, indent=2))
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="run the steps and write the summary")
    r.add_argument("--python", default=sys.executable, help="the Python the steps run with")
    r.add_argument("--dry-run", action="store_true", help="on the CPU, tiny settings")
    r.add_argument("--out", help="summary folder (default benchmarks/results/gpu_check-<date>)")
    r.add_argument("--steps", help=f"comma-separated subset of: {','.join(STEPS)}")
    r.add_argument("--budget", type=int, help="seconds for all steps (default 450; dry 1200)")
    r.add_argument("--work", help="where the temporary work folder goes (default: $TMPDIR)")
    r.add_argument("--keep-work", action="store_true", help="keep the work folder")
    r.add_argument("--setup-status", default="skipped", choices=["passed", "failed", "skipped"])
    r.add_argument("--setup-note", default="")
    r.add_argument("--setup-seconds", type=float, default=0.0)
    r.add_argument("--setup-log")

    w = commands.add_parser("worker", help="one measurement (used by run)")
    jobs = w.add_subparsers(dest="job", required=True)
    e = jobs.add_parser("env")
    e.add_argument("--json", required=True)
    e.add_argument("--cuda", action="store_true", help="also try bitsandbytes on the GPU")
    p = jobs.add_parser("prepare")
    p.add_argument("--entities", type=int, nargs="+", default=[40])
    m = jobs.add_parser("matmul")
    m.add_argument("--size", type=int, default=8192)
    m.add_argument("--dtype", default="bfloat16")
    m.add_argument("--device", default="cuda")
    m.add_argument("--warmup", type=int, default=3)
    m.add_argument("--repeats", type=int, default=10)
    m.add_argument("--json", required=True)
    f = jobs.add_parser("faiss")
    f.add_argument("--vectors", type=int, default=100_000)
    f.add_argument("--queries", type=int, default=2000)
    f.add_argument("--k", type=int, default=10)
    f.add_argument("--no-gpu", action="store_true")
    f.add_argument("--json", required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "run":
        return run(args)
    workers = {
        "env": worker_env,
        "prepare": worker_prepare,
        "matmul": worker_matmul,
        "faiss": worker_faiss,
    }
    workers[args.job](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

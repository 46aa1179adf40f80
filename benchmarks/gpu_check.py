"""The GPU check: every kind of kfr cell once on the GPU, timed, with one summary.

``benchmarks/gpu_check.sh --bundle DIR`` installs the bundle (``make gpu-bundle``,
:mod:`benchmarks.gpu_bundle`) into a ``--target`` folder and calls ``run`` here, which needs only
the standard library. Each step is its own process group under its own time box, inside one
budget (``--budget``, 450 s on the GPU), up to ``--jobs`` at a time (3 on the GPU, where a cell
is mostly start-up and the 135M model leaves the GPU nearly idle; 1 in the dry run) under the
rules of :mod:`benchmarks.gpu_schedule`:

``prepare``      alone, first: probe the machine (GPU, driver, library versions, bitsandbytes'
                 CUDA library, a 4-bit round trip on the GPU); the encoder's random weights
cells            :data:`benchmarks.gpu_cells.CELLS`: base (short and ~300-token contexts, float32
                 and bfloat16), ft full / LoRA / QLoRA, DDP and FSDP on one GPU, qa_ft, distill,
                 rag, raft; per cell: status, seconds, accuracy, questions/s, training tokens/s
                 and timings from its results.json
``gpu_tests``    alone, last: ``pytest -m gpu`` on the files with the marker (gpu_test_plugin)

The summary (``gpu_check.json``, ``gpu_check.md``, ``gpu_check.log`` with every step's output)
is rewritten in ``--out`` after every finished step, steps in plan order, so an interrupted run
leaves one. Exit code: 0 when every step passed or was skipped for a stated reason, 1 when one
failed, 2 when there is no GPU (without ``--dry-run``: the plan on the CPU, tiny settings).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script by gpu_check.sh
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.gpu_bundle import ENCODER, FAISS_NOTE, TOKENIZER, materialize_encoder
from benchmarks.gpu_cells import CELLS, OPT_IN, cell_figures, cell_overrides, cell_problem
from benchmarks.gpu_schedule import Job, run_plan
from benchmarks.gpu_summary import exit_code, junit_counts, last_error_line, markdown

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_JSON, SUMMARY_MD, SUMMARY_LOG = "gpu_check.json", "gpu_check.md", "gpu_check.log"
PREPARE, GPU_TESTS = "prepare", "gpu_tests"
STEPS = (PREPARE, *(c.name for c in CELLS), GPU_TESTS)
BOX_S = {PREPARE: 60, GPU_TESTS: 120, **{c.name: c.box_s for c in CELLS}}
DRY_BOX_S = 420  # every step on 2 shared CPU cores
BUDGET_S, DRY_BUDGET_S = 450, 5400
JOBS, DRY_JOBS = 3, 1  # steps at a time: the dry run's CPUs (CI, dev) have 2 cores
PLAN = (
    Job(PREPARE, alone=True),  # rag and raft need the encoder it writes
    *(Job(c.name, c.alone, "distributed" if c.distributed else None) for c in CELLS),
    Job(GPU_TESTS, alone=True),
)
LOG_TAIL_LINES = 400  # per step in gpu_check.log
STANDINS = (
    "model: SmolLM2-135M's shape, random weights, SmolLM2's tokenizer (the 89 MiB package "
    "cannot travel); encoder: all-MiniLM-L6-v2's shape and tokenizer, random weights; "
    "control set: off (eval.control=null; its 33 MiB data package is not carried)"
)
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class Step:
    name: str
    status: str = "skipped"  # passed | failed | skipped
    reason: str = "not run"
    duration_s: float = 0.0
    started_s: float | None = None  # after the check's start: shows which steps overlapped
    time_box_s: float = 0.0
    command: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def set(self, status: str, reason: str = "") -> Step:
        self.status, self.reason = status, reason
        return self


def run_boxed(argv: list[str], log: Path, box_s: float, env: dict[str, str]) -> int:
    """Run ``argv`` in its own process group, output appended to ``log``; 124 after ``box_s``."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **ENV, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=max(1.0, box_s))
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=grace)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            rc = 124
        out.write(f"# exit code {rc}\n")
    return rc


class Check:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work, self.dry = args, work, args.dry_run
        self.py = args.python
        self.bundle = Path(args.bundle).resolve()
        self.out = Path(args.out)
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.started, self.clock = _now(), time.monotonic()
        self.deadline = self.clock + args.budget
        self.steps = [Step(name) for name in STEPS]
        self.install = {
            "status": args.install_status,
            "note": args.install_note,
            "duration_s": args.install_seconds,
        }
        self.environment: dict[str, Any] = {}
        self.encoder = work / "encoder"
        self.jobs = args.jobs or (DRY_JOBS if self.dry else JOBS)
        self.peak_jobs = 0
        self.lock = threading.Lock()  # the summary's files, written as steps finish

    def boxed(self, step: Step, argv: list[str], env: dict[str, str] | None = None) -> int:
        step.command = " ".join(argv)
        return run_boxed(argv, self.logs / f"{step.name}.log", step.time_box_s, env or {})

    def failure(self, step: Step, rc: int) -> str:
        line = last_error_line((self.logs / f"{step.name}.log").read_text(errors="replace"))
        if rc == 124:
            return f"timed out after {step.time_box_s:.0f} s: {line}"
        return f"exit code {rc}: {line}"

    def prepare(self, step: Step) -> None:
        out = self.work / "env.json"
        argv = [self.py, "-m", "benchmarks.gpu_check", "probe", "--bundle", str(self.bundle)]
        argv += ["--encoder", str(self.encoder), "--json", str(out)]
        rc = self.boxed(step, argv + ([] if self.dry else ["--cuda"]))
        self.environment = _read_json(out) or {}
        if rc != 0 or not self.environment:
            step.set("failed", self.failure(step, rc))
            return
        bnb = self.environment.get("bitsandbytes_cuda")
        if not self.dry and bnb is not True:
            step.set("failed", f"bitsandbytes 4-bit on the GPU: {bnb}")
            return
        step.set("passed", "dry run: nothing on a GPU" if self.dry else "")

    def gpu_tests(self, step: Step) -> None:
        junit, cache = self.work / "gpu_tests.xml", self.work / "test-cache"
        (cache / "models").mkdir(parents=True)  # the gpu tests link their caches' models/ here
        argv = [
            self.py,
            "-m",
            "pytest",
            "-p",
            "benchmarks.gpu_test_plugin",
            "-p",
            "no:cacheprovider",
        ]
        argv += ["-m", "gpu", "-q", "-rs", f"--junitxml={junit}", *gpu_test_files()]
        env = {"KFR_GPU_CHECK_TOKENIZER": str(self.bundle / TOKENIZER), "KFR_CACHE_DIR": str(cache)}
        rc = self.boxed(step, argv, env)
        counts = junit_counts(junit)
        step.figures.update(counts)
        if rc != 0 or not counts:
            step.set("failed", self.failure(step, rc))
        elif counts["passed"] == 0 and not self.dry:
            step.set("failed", "every gpu test was skipped: " + last_error_line(_log(self, step)))
        elif counts["skipped"]:
            step.set("passed", f"{counts['skipped']} skipped ({_skips(_log(self, step))})")
        else:
            step.set("passed")

    def cell(self, step: Step) -> None:
        spec = next(c for c in CELLS if c.name == step.name)
        if self.dry and spec.dry_skip:
            step.set("skipped", f"dry run: {spec.dry_skip}")
            return
        if spec.retrieves and not (self.encoder / "config.json").is_file():
            step.set("failed", "no encoder: the prepare step failed or did not run")
            return
        run_dir = self.work / "runs" / step.name
        overrides = cell_overrides(
            spec,
            dry=self.dry,
            tokenizer=self.bundle / TOKENIZER,
            encoder=self.encoder,
            cache_dir=self.work / "cache" / step.name,
            run_dir=run_dir,
            output_root=self.work / "outputs",
        )
        env = {"KFR_CACHE_DIR": str(self.work / "cache" / step.name)}
        rc = self.boxed(step, [self.py, "-m", spec.module, *overrides], env)
        results = _read_json(run_dir / "results.json")
        if results:
            step.figures, step.details = cell_figures(results)
        if rc != 0:
            step.set("failed", self.failure(step, rc))
        elif not results:
            step.set("failed", f"exit code 0 but no results.json in {run_dir}")
        elif problem := cell_problem(spec, results, dry=self.dry):
            step.set("failed", problem)
        else:
            step.set("passed")

    def run(self) -> int:
        wanted = set(self.args.only.split(",")) if self.args.only else set(STEPS) - OPT_IN
        if unknown := wanted - set(STEPS):
            raise SystemExit(f"gpu_check: unknown step(s) {sorted(unknown)}; steps: {STEPS}")
        by_name = {s.name: s for s in self.steps}
        for step in self.steps:
            if self.install["status"] == "failed":
                step.set("skipped", "the bundle did not install")
            elif step.name not in wanted:
                step.set("skipped", "not selected (--only)")
        plan = [j for j in PLAN if j.name in wanted and self.install["status"] != "failed"]
        no_gpu = False

        def done(name: str, peak: int) -> bool:
            nonlocal no_gpu
            self.peak_jobs = peak
            no_gpu = name == PREPARE and not self.dry and self.environment.get("cuda") is False
            if not no_gpu:
                self.save(finished=False)
            return not no_gpu

        run_plan(plan, lambda name: self.one(by_name[name]), self.jobs, done)
        if no_gpu:
            self.save(finished=True, code=2)
            reason = self.environment.get("cuda_reason", by_name[PREPARE].reason)
            print(f"gpu_check: no GPU: {reason}")
            return 2
        code = exit_code((s.status for s in self.steps), self.install)
        self.save(finished=True, code=code)
        took = time.monotonic() - self.clock
        print(f"gpu_check: exit {code} after {took:.0f} s; summary in {self.out / SUMMARY_MD}")
        return code

    def one(self, step: Step) -> None:
        left = self.deadline - time.monotonic()
        box = DRY_BOX_S if self.dry else BOX_S[step.name]
        step.time_box_s = float(int(min(box, left)))
        if step.time_box_s < 5:
            step.set("failed", f"not run: the {self.args.budget} s budget was used up")
            return
        began = time.monotonic()
        step.started_s = round(began - self.clock, 1)
        try:
            {PREPARE: self.prepare, GPU_TESTS: self.gpu_tests}.get(step.name, self.cell)(step)
        except Exception as err:  # the check's own bookkeeping
            step.set("failed", f"gpu_check error: {type(err).__name__}: {err}")
        step.duration_s = round(time.monotonic() - began, 1)
        print(f"  {step.name:<15} {step.status:<7} {step.duration_s:6.1f} s  {step.reason}")
        sys.stdout.flush()

    def save(self, finished: bool, code: int | None = None) -> None:
        report = {
            "check": "kfr gpu_check",
            "dry_run": self.dry,
            "started": self.started,
            "finished": _now() if finished else None,
            "duration_s": round(time.monotonic() - self.clock, 1),
            "budget_s": self.args.budget,
            "jobs": self.jobs,  # the most steps allowed at once
            "peak_jobs": self.peak_jobs,  # the most that ran at once (so far)
            "exit_code": code,
            "install": self.install,
            "environment": self.environment,
            "notes": [FAISS_NOTE, STANDINS],
            "steps": [asdict(s) for s in self.steps],
        }
        with self.lock:
            self._write(report)

    def _write(self, report: dict[str, Any]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (
            (SUMMARY_JSON, json.dumps(report, indent=1)),
            (SUMMARY_MD, markdown(report)),
        ):
            (self.out / f".{name}.tmp").write_text(text + "\n", encoding="utf-8")
            (self.out / f".{name}.tmp").replace(self.out / name)
        parts = [Path(self.args.install_log)] if self.args.install_log else []
        parts += [self.logs / f"{s}.log" for s in STEPS]
        with (self.out / SUMMARY_LOG).open("w", encoding="utf-8") as combined:
            for part in (p for p in parts if p.is_file()):
                lines = part.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                combined.write(f"===== {part.stem} =====\n" + "\n".join(lines) + "\n")


def _log(check: Check, step: Step) -> str:
    return (check.logs / f"{step.name}.log").read_text(errors="replace")


def _skips(log: str) -> str:
    reasons = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.+)", log)))
    return "; ".join(reasons)[:300] or "see the log"


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def gpu_test_files() -> list[str]:
    """Test files that carry the ``gpu`` marker (collecting only them saves the imports)."""
    marked = re.compile(r"\bmark\.gpu\b")
    return [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "tests").rglob("test_*.py"))
        if marked.search(p.read_text(encoding="utf-8", errors="replace"))
    ]


def probe(args: argparse.Namespace) -> int:
    """The prepare step, in the Python under test: the encoder's weights first (rag and raft
    need them whatever else fails), then versions, the GPU and bitsandbytes on it."""
    import importlib.metadata as metadata
    import platform

    import torch

    started = time.perf_counter()
    materialize_encoder(Path(args.bundle) / ENCODER, Path(args.encoder))
    info: dict[str, Any] = {"encoder_build_s": round(time.perf_counter() - started, 2)}
    info.update(python=platform.python_version(), torch=torch.__version__)
    info.update(torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
    for dist in ("transformers", "lightning", "peft", "accelerate", "sentence-transformers"):
        info[dist] = metadata.version(dist)
    for dist in ("bitsandbytes", "faiss-cpu", "hydra-core", "omegaconf"):
        info[dist] = metadata.version(dist)
    import faiss

    info["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        info["driver"] = _driver()
        info["bitsandbytes_library"] = _bnb_library()
        info["bitsandbytes_cuda"] = _bnb_round_trip() if args.cuda else None
    else:
        info["cuda_reason"] = f"torch {torch.__version__}: torch.cuda.is_available() is False"
    Path(args.json).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(info, indent=1))
    return 0


def _bnb_library() -> str:
    """The native library bitsandbytes picks here (its own choice, cextension)."""
    try:
        from bitsandbytes.cextension import get_cuda_bnb_library_path
        from bitsandbytes.cuda_specs import get_cuda_specs

        return get_cuda_bnb_library_path(get_cuda_specs()).name
    except Exception as err:
        return f"{type(err).__name__}: {err}"


def _bnb_round_trip() -> bool | str:
    try:
        import bitsandbytes.functional as F
        import torch

        x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
        packed, state = F.quantize_4bit(x, quant_type="nf4")
        back = F.dequantize_4bit(packed, state, quant_type="nf4")
        return bool(((back - x).abs().mean() < 0.2).item())
    except Exception as err:
        return f"{type(err).__name__}: {err}"


def _driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="every step, then the summary")
    r.add_argument("--bundle", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--python", default=sys.executable, help="the Python the steps run with")
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("--only", help=f"comma-separated steps of: {','.join(STEPS)}")
    r.add_argument("--budget", type=float, help=f"seconds (default {BUDGET_S}; dry run more)")
    r.add_argument("--jobs", type=int, help=f"steps at a time (default {JOBS}; dry run {DRY_JOBS})")
    r.add_argument("--keep-work", action="store_true")
    r.add_argument("--install-status", default="passed", choices=("passed", "failed", "skipped"))
    r.add_argument("--install-note", default="")
    r.add_argument("--install-seconds", type=float, default=0.0)
    r.add_argument("--install-log")
    p = sub.add_parser("probe", help="the prepare step (run by `run`)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--encoder", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--cuda", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "probe":
        return probe(args)
    args.budget = args.budget or (DRY_BUDGET_S if args.dry_run else BUDGET_S)
    work = Path(tempfile.mkdtemp(prefix="kfr-gpu-check-"))
    try:
        return Check(args, work).run()
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

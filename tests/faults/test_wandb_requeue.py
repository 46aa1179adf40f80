"""Requeue and W&B (offline): a cell killed mid-training and run again continues the same W&B
run (one run id per cell; each attempt an ``offline-run-<time>-<id>`` folder that `wandb sync`
uploads in order into that run, the training curve continued from the resumed step), never a
second run; a cell that fails writes nothing into the next cell's run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import harness
from tests.unit.wandb_offline import read_finished_run, read_offline_run

pytestmark = [pytest.mark.faults, pytest.mark.integration]

WANDB = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
CELLS = ("method=ft,base", "augment.paraphrases=0")


def _runs(cell: Path) -> list[Path]:
    return sorted((cell / "wandb").glob("offline-run-*"))


def _run_id(folder: Path) -> str:
    return folder.name.rsplit("-", 1)[1]


def _steps(run) -> list[int]:
    return [row["trainer/global_step"] for row in run.history if "trainer/global_step" in row]


def test_a_killed_cell_continues_its_wandb_run_and_a_failed_one_leaks_nothing(tmp_path):
    cache = harness.fresh_cache(tmp_path)
    out = tmp_path / "out"
    args = harness.sweep_args(out, *CELLS, logger="wandb")
    # Killed after its 3rd resumable checkpoint: fine-tuning resumes from it.
    killed = harness.run_kfr(
        args, tmp_path, cache, env={**WANDB, "KFR_FAULT_KILL_AT": "train.checkpoint:3"}
    )
    assert killed.killed, killed.output[-3000:]
    harness.count("kill_points_tried")
    harness.KILLED_AT.append("point:train.checkpoint:3 (W&B)")
    ft = harness.cell_with(out / "sweep", "method=ft")
    (first,) = _runs(ft)
    done = harness.run_kfr(args, tmp_path, cache, env=WANDB)
    assert done.returncode == 0, done.output[-4000:]
    first_attempt, second = _runs(ft)
    assert first_attempt == first and _run_id(second) == _run_id(first)  # one run, continued
    resumed = read_finished_run(second)
    assert resumed.exit_code == 0 and "acc" in resumed.summary
    # The curve goes on from the checkpoint's step (the killed attempt's own rows may be lost:
    # SIGKILL took W&B's writer process with it before it flushed).
    assert min(_steps(resumed)) > 0, "history restarted instead of continuing"
    assert all(step <= min(_steps(resumed)) for step in _steps(read_offline_run(first)))
    base = harness.cell_with(out / "sweep", "method=base")
    (base_run,) = _runs(base)
    assert _run_id(base_run) != _run_id(first)

    # Run again: every cell is finished, so no W&B run starts at all.
    again = harness.run_kfr(args, tmp_path, cache, env=WANDB)
    assert again.returncode == 0 and len(_runs(ft)) == 2 and len(_runs(base)) == 1

    # A failing cell (an error raised in its 2nd training batch) ahead of a good one.
    out2 = tmp_path / "out2"
    # Another learning rate: another training key, so the cell trains (and fails) again.
    args2 = harness.sweep_args(out2, *CELLS, "finetune.lr=0.0002", logger="wandb")
    failing = harness.run_kfr(
        args2, tmp_path, cache, env={**WANDB, "KFR_FAULT_RAISE_AT": "train.batch:2"}
    )
    assert failing.returncode == 1, failing.output[-4000:]
    ft2 = harness.cell_with(out2 / "sweep", "method=ft")
    base2 = harness.cell_with(out2 / "sweep", "method=base")
    assert (ft2 / "failed.json").is_file() and (base2 / "results.json").is_file()
    (failed_run,) = _runs(ft2)
    failed = read_finished_run(failed_run)
    assert failed.exit_code == 1 and "InjectedFault" in failed.summary["error"]
    (good_run,) = _runs(base2)
    good = read_finished_run(good_run)
    assert good.exit_code == 0 and "error" not in good.summary
    assert not _steps(good), "the failed cell's training curve leaked into the next cell's run"
    assert good.config["method"]["name"] == "base" and _run_id(good_run) != _run_id(failed_run)

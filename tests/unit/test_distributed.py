"""Data parallelism without a GPU: DDP over gloo with 2 CPU processes, through the GPU code path.

The same `kfr` cells run on 1 process (accumulating 2 micro-batches) and on 2 processes (one
micro-batch each): the per-step losses agree, because each rank trains its share of the step's
blocks and the gradients are all-reduced; a killed 2-process training resumes from its
checkpoint to the uninterrupted run's weights; a sweep runs DDP cells one after another. Plus
the settings that cannot be honoured, refused before any work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from kfr.core.errors import UserError
from kfr.data.schema import QaPair
from kfr.finetune.examples import ExampleData, qa_example, step_targets
from kfr.finetune.modes import check_finetune_settings, strategy
from kfr.finetune.train import train
from tests.ddp_runs import (
    COMMON,
    ONE_PROCESS,
    TWO_PROCESSES,
    isolated_cache,
    kfr_command,
    kfr_env,
    results,
    run_kfr,
    step_losses,
    trained_weights,
)
from tests.unit.test_finetune_train import ft_config

# Answers of different lengths (1 to 9 words): a per-micro-batch mean would weight their tokens
# differently for every split.
PAIRS = [
    QaPair(
        f"p{i}",
        f"d{i}",
        f"Where did Velorin number {i} grow up?",
        " ".join(["Marrowvale"] * (i + 1)),
    )
    for i in range(8)
]

# A learning rate at which every step moves the weights a lot: a rank that skipped the gradient
# all-reduce would drift from the 1-process run at once.
FAST = (
    "finetune.lr=1e-2",
    "finetune.warmup_ratio=0",
    "finetune.block_size=32",
    "finetune.epochs=1",
)
METHODS = ("ft", "qa_ft")


# ----------------------------------------------------------------------------- step geometry


def test_step_targets_count_every_ranks_share_of_the_accumulation_window():
    counts = [1, 2, 3, 4, 5, 6, 7]  # trained tokens of examples 0..6
    order = [6, 5, 4, 3, 2, 1, 0]
    # 1 process, micro 2, accumulate 2: windows {6,5,4,3} and {2,1,0}.
    assert step_targets(counts, order, 1, 2, 2) == [22, 22, 6, 6]
    # 2 processes, micro 2, accumulate 1: rank 0 takes 6,4,2,0(+wrap) and rank 1 5,3,1,6.
    shares = step_targets(counts, order, 2, 2, 1)
    assert shares == [7 + 5 + 6 + 4, 3 + 1 + 2 + 7]  # both ranks see the same count


def test_a_supervised_step_learns_the_same_whatever_the_micro_batch_split(ft_cache, tmp_path):
    """Answers of different lengths: the loss is the step's per-token mean, so one micro-batch
    of 4, two of 2 accumulated, or four of 1 give the same weights (the checkpoint key leaves
    the split out, so this must hold)."""
    examples = [qa_example(pair) for pair in PAIRS]
    weights, losses = {}, {}
    for micro in (4, 2, 1):
        cfg = ft_config(*FAST[:2], f"trainer.micro_batch_size={micro}", cache=str(ft_cache))
        out = tmp_path / f"micro{micro}"
        summary = train(cfg, [], ft_cache, out, examples=examples)
        assert summary["accumulate"] == 4 // micro and summary["steps"] == 2
        weights[micro] = trained_weights(out)
        losses[micro] = (summary["train_loss_first"], summary["train_loss_last"])
    for micro in (2, 1):
        assert losses[micro] == pytest.approx(losses[4], abs=1e-4)
        for name, tensor in weights[4].items():
            torch.testing.assert_close(weights[micro][name], tensor, rtol=0, atol=1e-5, msg=name)
    assert abs(losses[4][0] - losses[4][1]) > 0.05  # the first step changed the model


def test_example_batches_carry_their_steps_token_count(tiny_lm):
    data = ExampleData([qa_example(p) for p in PAIRS[:6]], seed=0)
    data.connect(tiny_lm.tokenizer, batch_size=2, max_length=512)
    batches = list(data.train_dataloader())
    trained = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    # No trainer: one process, no accumulation -- each micro-batch is its own step.
    assert [int(b["step_targets"]) for b in batches] == trained


# ----------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            [
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.precision=32-true",
                "trainer.devices=2",
                "finetune.batch_size=3",
            ],
            r"field 'finetune\.batch_size'.*cannot be split evenly over 2 devices",
        ),
        (
            [
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.precision=32-true",
                "trainer.devices=512",
            ],
            r"field 'trainer\.devices'.*512 devices asked for, but this machine has \d+ CPU",
        ),
        (
            ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.precision=32-true"],
            r"field 'trainer\.strategy'.*FSDP needs GPUs",
        ),
    ],
)
def test_distributed_settings_the_machine_cannot_honour_are_refused(overrides, fragment, tmp_path):
    with pytest.raises(UserError, match=fragment):
        check_finetune_settings(ft_config(*overrides, cache=str(tmp_path)))


def test_slurm_tasks_must_match_the_ranks(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_NTASKS", "3")
    monkeypatch.setenv("SLURM_JOB_NAME", "kfr-demo")
    cfg = ft_config(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.devices=2",
        cache=str(tmp_path),
    )
    with pytest.raises(UserError, match=r"SLURM job has 3 tasks but .* = 2 ranks"):
        check_finetune_settings(cfg)


def test_qlora_refuses_fsdp_in_its_own_check(tmp_path):
    cfg = ft_config("finetune=qlora", "trainer.strategy=fsdp", cache=str(tmp_path))
    with pytest.raises(UserError, match="4-bit weights cannot be sharded by FSDP"):
        strategy(cfg.finetune.mode).check(cfg)


def test_a_slurm_sweep_without_a_controller_stops_before_writing(tmp_path):
    env = {**kfr_env(), "SLURM_CONF": str(tmp_path / "no-such-slurm.conf")}
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        kfr_command(
            "-m",
            "hydra/launcher=slurm_cpu",
            "model=tiny_llama",
            f"hydra.sweep.dir={sweep}",
            cache=tmp_path / "cache",
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("kfr: error: field 'hydra/launcher'"), lines
    assert "Traceback" not in done.stderr
    assert not sweep.exists()


# ----------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, cache_dir) -> dict[str, dict[str, Path]]:
    """The same two cells (ft, qa_ft) swept on 2 processes and on 1; run dirs by method."""
    root = tmp_path_factory.mktemp("ddp")
    found: dict[str, dict[str, Path]] = {}
    for name, trainer in (("two", TWO_PROCESSES), ("one", ONE_PROCESS)):
        cache = isolated_cache(cache_dir, root / f"cache_{name}")
        sweep = root / f"sweep_{name}"
        run_kfr(
            "-m", "model=tiny_llama", f"method={','.join(METHODS)}", *COMMON, *FAST, *trainer,
            f"hydra.sweep.dir={sweep}", cache=cache, cwd=root,
        )  # fmt: skip
        found[name] = {
            results(d)["config"]["method"]["name"]: d
            for d in sweep.iterdir()
            if (d / "results.json").is_file()
        }
    return found


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_take_the_steps_one_process_takes(sweeps, method):
    two, one = sweeps["two"][method], sweeps["one"][method]
    assert results(two)["finetune"]["devices"] == 2 and results(one)["finetune"]["devices"] == 1
    assert (
        results(two)["finetune"]["accumulate"] == 1 and results(one)["finetune"]["accumulate"] == 2
    )
    assert (two / "rank_1.log").is_file()  # rank 1 ran this cell only, in this cell's folder
    got, expected = step_losses(two), step_losses(one)
    assert len(got) == len(expected) >= 4
    # Every step but the epoch's last sees the same blocks: when the epoch does not divide by
    # the ranks, rank 1 repeats the first block to keep step with rank 0 (as DistributedSampler).
    assert got[:-1] == pytest.approx(expected[:-1], rel=2e-5, abs=2e-5)
    assert abs(expected[0] - expected[-2]) > 0.05  # the steps moved the weights: no easy match


def test_a_killed_two_process_training_resumes_to_the_same_weights(sweeps, cache_dir, tmp_path):
    whole = results(sweeps["two"]["ft"])["finetune"]
    cache = isolated_cache(cache_dir, tmp_path / "cache")
    args = (
        "model=tiny_llama", "method=ft", *COMMON, *FAST, *TWO_PROCESSES,
        "trainer.checkpoint_every_min=1e-9", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    # Its own session: the kill reaches rank 1 too (what SLURM does to a preempted job).
    first = subprocess.Popen(
        kfr_command(*args, cache=cache), cwd=tmp_path, env=kfr_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not list((cache / "finetuned").glob("*.resume/last.ckpt")):
        assert first.poll() is None, "training ended before its first resumable checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "run" / "results.json").exists()

    run_kfr(*args, cache=cache, cwd=tmp_path)
    resumed = results(tmp_path / "run")["finetune"]
    assert resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] >= 1
    assert resumed["steps"] == whole["steps"] and resumed["key"] == whole["key"]
    expected = trained_weights(Path(whole["checkpoint"]))
    got = trained_weights(Path(resumed["checkpoint"]))
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6, msg=name)

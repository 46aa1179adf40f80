from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from kfr.core.storage import (
    READY_MARKER,
    atomic_write_jsonl,
    atomic_write_text,
    build_directory_once,
)


def test_atomic_write_leaves_old_file_intact_when_writer_fails(tmp_path):
    target = tmp_path / "out.jsonl"
    atomic_write_text(target, "old\n")

    def records():
        yield {"a": 1}
        raise RuntimeError("crash half-way")

    with pytest.raises(RuntimeError):
        atomic_write_jsonl(target, records())
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary left


def _slow_build(target: str, log: str) -> None:
    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        (tmp / "payload.txt").write_text("done")

    build_directory_once(target, build)


def test_concurrent_builders_build_once(tmp_path):
    target, log = tmp_path / "artefact", tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(str(target), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text() == "built\n"
    assert (target / "payload.txt").read_text() == "done"
    assert (target / READY_MARKER).exists()


def test_failed_build_leaves_nothing_and_can_be_retried(tmp_path):
    target = tmp_path / "artefact"

    def broken(tmp: Path) -> None:
        (tmp / "partial").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_directory_once(target, broken)
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    build_directory_once(target, lambda tmp: (tmp / "ok").write_text("y"))
    assert (target / "ok").read_text() == "y"

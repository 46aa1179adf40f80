from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from kfr.core import storage
from kfr.core.errors import UserError
from kfr.core.storage import (
    READY_MARKER,
    atomic_write,
    atomic_write_jsonl,
    atomic_write_text,
    build_directory_once,
    storage_error,
    verify_directory,
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


def _build_payload(tmp: Path) -> None:
    (tmp / "weights.bin").write_bytes(b"w" * 1000)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "config.json").write_text('{"a": 1}')


def test_the_marker_is_a_manifest_of_every_file(tmp_path):
    target = build_directory_once(tmp_path / "entry", _build_payload)
    manifest = json.loads((target / READY_MARKER).read_text())
    assert set(manifest["files"]) == {"weights.bin", "sub/config.json"}
    assert manifest["files"]["weights.bin"]["size"] == 1000
    assert manifest["files"]["weights.bin"]["sha256"] == hashlib.sha256(b"w" * 1000).hexdigest()
    assert verify_directory(target, full=True) is None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda t: (t / "weights.bin").write_bytes(b"w" * 500), "has 500 bytes"),
        (lambda t: (t / "weights.bin").write_bytes(b"x" * 1000), "does not match"),
        (lambda t: (t / "sub" / "config.json").unlink(), "missing"),
        (lambda t: (t / READY_MARKER).write_text("{not json"), "unreadable marker"),
    ],
)
def test_a_damaged_entry_is_rebuilt_with_a_warning_never_returned(tmp_path, caplog, damage, reason):
    target = build_directory_once(tmp_path / "entry", _build_payload)
    damage(target)
    assert reason in verify_directory(target, full=True)
    builds = []

    def rebuild(tmp: Path) -> None:
        builds.append(tmp)
        _build_payload(tmp)

    with caplog.at_level(logging.WARNING, logger="kfr.core.storage"):
        assert build_directory_once(target, rebuild) == target
    assert len(builds) == 1 and "is damaged" in caplog.text and reason in caplog.text
    assert (target / "weights.bin").read_bytes() == b"w" * 1000
    assert verify_directory(target, full=True) is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_content_hash_is_checked_once_per_process_and_again_when_a_file_changes(
    tmp_path, monkeypatch
):
    target = build_directory_once(tmp_path / "entry", _build_payload)
    hashed = []
    real_new = hashlib.new
    monkeypatch.setattr(hashlib, "new", lambda name, *a: hashed.append(name) or real_new(name))
    storage._verified.clear()
    for _ in range(3):
        assert build_directory_once(target, _build_payload) == target
    assert len(hashed) == 2  # both files, once
    weights = target / "weights.bin"
    weights.write_bytes(b"y" * 1000)  # same size, altered: its mtime (and inode) changed
    assert "does not match" in verify_directory(target)


def test_a_legacy_empty_marker_is_trusted_and_given_a_manifest(tmp_path):
    target = tmp_path / "old"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"old")
    (target / READY_MARKER).write_text("")
    nested = target / "index-abc"  # another entry built inside it later: not its file
    nested.mkdir()
    (nested / "index.faiss").write_bytes(b"i")
    (nested / READY_MARKER).write_text("")
    (target / "index-abc.lock").write_text("")

    def never(tmp: Path) -> None:
        raise AssertionError("a complete legacy entry must not be rebuilt")

    assert build_directory_once(target, never) == target
    manifest = json.loads((target / READY_MARKER).read_text())
    assert list(manifest["files"]) == ["weights.bin"]
    (target / "weights.bin").write_bytes(b"x")
    assert "has 1 bytes, 3 when built" in verify_directory(target)


def test_temporaries_of_killed_builders_are_removed_under_the_lock(tmp_path):
    stale = tmp_path / ".entry.abc123.tmp"
    stale.mkdir()
    (stale / "half").write_text("x")
    other = tmp_path / ".other.abc123.tmp"
    other.mkdir()
    build_directory_once(tmp_path / "entry", _build_payload)
    assert not stale.exists() and other.exists()


def test_full_disk_and_read_only_errors_become_one_line_naming_the_path(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device", "/tmp/x", None, "/cache/dst")
    err = storage_error(full)
    assert isinstance(err, UserError) and str(err).startswith("/cache/dst: cannot write: no space")
    read_only = OSError(errno.EROFS, "Read-only file system", "/out/sweep")
    try:
        try:
            raise read_only
        except OSError as inner:
            raise RuntimeError("while saving") from inner
    except RuntimeError as outer:
        assert "read-only file system" in str(storage_error(outer))
    assert storage_error(FileNotFoundError(errno.ENOENT, "nope", "/x")) is None
    assert storage_error(ValueError("bad")) is None

    def no_room(tmp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # a write names no file

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "out.json", no_room)
    assert caught.value.filename == str(tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []


def _points(env: dict[str, str], tmp_path: Path):
    import os
    import subprocess
    import sys

    code = "from kfr.core import faults\nfor name in 'abab': faults.point(name, 'd')\nprint('ok')"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_fault_points_kill_raise_and_log_only_when_asked(tmp_path):
    assert _points({}, tmp_path).stdout == "ok\n"
    assert _points({"KFR_FAULT_KILL_AT": "b:2"}, tmp_path).returncode == -9
    assert _points({"KFR_FAULT_KILL_AT": "*:3"}, tmp_path).returncode == -9
    assert _points({"KFR_FAULT_KILL_AT": "c:1"}, tmp_path).stdout == "ok\n"
    raised = _points({"KFR_FAULT_RAISE_AT": "a:2"}, tmp_path)
    assert "InjectedFault: fault injected at a:2" in raised.stderr
    log = tmp_path / "points.log"
    _points({"KFR_FAULT_LOG": str(log), "KFR_FAULT_KILL_AT": "b:2"}, tmp_path)
    rows = [line.split()[1:] for line in log.read_text().splitlines()]
    assert rows == [["a", "1", "d"], ["b", "1", "d"], ["a", "2", "d"], ["b", "2", "d"]]

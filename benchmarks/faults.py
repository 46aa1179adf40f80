"""Reliability figures: the fault suite's counts, and what verifying a cache entry costs.

1. Runs the fault suite (``pytest tests/faults``: real ``kfr -m`` sweeps killed with SIGKILL at
   seeded points, two racing sweeps, damaged cache entries, a full disk, a read-only folder,
   W&B requeue) and prints what it counted: kill points tried, sweeps recovered, finished cells
   redone (goal 0), files lost (goal 0), concurrent duplicate builds (goal 0), damaged entries
   rebuilt and loaded (goal 0).
2. Times :func:`kfr.core.storage.verify_directory` on the real SmolLM2 conversion (~540 MB):
   the check every reuse pays (sizes, stat), the content hash paid once per process, and the
   manifest written at build time.

Run from the repository root::

    .venv/bin/python -m benchmarks.faults [--seed 14] [--skip-suite] [--out FILE]

``--skip-suite`` only times the verification. The suite's seed, number of episodes and kills
per episode are ``KFR_FAULTS_SEED``, ``KFR_FAULTS_EPISODES``, ``KFR_FAULTS_KILLS``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from platformdirs import user_cache_dir

from kfr.core import storage
from kfr.core.storage import directory_manifest, verify_directory

REPO = Path(__file__).resolve().parent.parent


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def verification_cost(repeat: int = 3) -> dict[str, float | int | str]:
    from kfr.models.loading import _embedded_checkpoint

    cache = Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))
    entry = _embedded_checkpoint(cache)  # converted (and given a manifest) if missing
    size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
    verify_directory(entry, full=True)  # page cache warm, as for every load after the first

    def reuse() -> None:
        assert verify_directory(entry) is None

    def full() -> None:
        assert verify_directory(entry, full=True) is None

    return {
        "entry": entry.name,
        "bytes": size,
        "hash": storage.HASH,
        "check_on_every_reuse_ms": round(_best(reuse, 20) * 1000, 3),
        "content_hash_once_per_process_s": round(_best(full, repeat), 3),
        "manifest_at_build_s": round(_best(lambda: directory_manifest(entry), repeat), 3),
    }


def run_suite(summary: Path) -> tuple[int, float]:
    env = {**os.environ, "KFR_FAULTS_SUMMARY": str(summary)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults"],
        cwd=REPO,
        env=env,
    )
    return done.returncode, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="KFR_FAULTS_SEED (default 14)")
    parser.add_argument("--skip-suite", action="store_true", help="only time the verification")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "faults" / "figures.json")
    args = parser.parse_args(argv)
    if args.seed is not None:
        os.environ["KFR_FAULTS_SEED"] = str(args.seed)
    figures: dict = {"verification": verification_cost()}
    code = 0
    if not args.skip_suite:
        with tempfile.TemporaryDirectory() as tmp:
            summary = Path(tmp) / "summary.json"
            code, seconds = run_suite(summary)
            figures["suite"] = json.loads(summary.read_text()) if summary.is_file() else {}
            figures["suite"]["exit_code"] = code
            figures["suite"]["wall_s"] = round(seconds, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    v = figures["verification"]
    print(
        f"Verification of {v['entry']} ({v['bytes'] / 1e6:.0f} MB): every reuse "
        f"{v['check_on_every_reuse_ms']} ms (sizes, stat); {v['hash']} of every file once per "
        f"process {v['content_hash_once_per_process_s']} s; manifest at build "
        f"{v['manifest_at_build_s']} s"
    )
    if "suite" in figures:
        s = figures["suite"]
        for key in (
            "kill_points_tried",
            "sweeps_recovered",
            "finished_cells_redone",
            "files_lost",
            "partial_files_seen_complete",
            "concurrent_duplicate_builds",
            "corrupt_entries_rebuilt",
            "corrupt_entries_loaded",
            "exit_code",
            "wall_s",
        ):
            print(f"{key:30s} {s.get(key)}")
    print(f"figures: {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())

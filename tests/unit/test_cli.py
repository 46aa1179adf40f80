"""The `kfr` command end to end on the tiny model: outputs, skipping, and bad input (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfr.data.readers import write_questions_jsonl
from kfr.data.schema import Question
from tests.conftest import REPO_ROOT


def run_kfr(*overrides: str, cache_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KFR_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    flags = [o for o in overrides if o.startswith("-")]
    settings = [o for o in overrides if not o.startswith("-")]
    return subprocess.run(
        # Hydra's flags (-m) come first; the test's own overrides win over the defaults here.
        [
            sys.executable,
            "-m",
            "kfr.cli",
            *flags,
            "model=tiny_llama",
            "eval.progress=false",
            *settings,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def questions_file(tmp_path) -> Path:
    path = tmp_path / "q.jsonl"
    write_questions_jsonl(
        path,
        [
            Question(f"q{i}", f"Question number {i}?", ("red", "green", "blue"), i % 3, "colours")
            for i in range(6)
        ],
    )
    return path


def test_run_writes_results_and_predictions_then_skips_when_rerun(
    tmp_path, cache_dir, questions_file
):
    run_dir = tmp_path / "run"
    args = ("data=custom", f"data.questions={questions_file}", f"hydra.run.dir={run_dir}")
    first = run_kfr(*args, cache_dir=cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "acc " in first.stdout and "n=6" in first.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["n"] == 6
    assert results["cell"] == {
        "experiment": "default",
        "model": "tiny_llama",
        "data": "custom",
        "method": "base",
        "style": "cloze",
        "shots": 0,
        "seed": 0,
    }
    assert set(results["versions"]) >= {"python", "torch", "transformers", "kfr"}
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 6
    record = json.loads(lines[0])
    assert set(record) >= {"id", "loglikelihoods", "prediction", "correct"}
    assert len(record["loglikelihoods"]) == 3
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    before = (run_dir / "results.json").stat().st_mtime_ns
    second = run_kfr(*args, cache_dir=cache_dir, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "skipping" in second.stdout + second.stderr
    assert (run_dir / "results.json").stat().st_mtime_ns == before


BAD_QUESTIONS = '{"id": "q1", "question": "ok?", "choices": ["a", "b"], "answer": 0}\n{"id": "q2",'


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["eval.shots=many"], "eval.shots"),
        (["eval.colour=blue"], "colour"),
        (["model=gpt_nonexistent"], "model"),
        (["+eval.colour=blue"], "eval.colour"),
        (["model.source=hf", "model.path=/no/such/checkpoint"], "model.path"),
        (["data=custom", "data.questions=BAD"], "q.jsonl:2"),
        (["data=custom", "data.questions=MISSING"], "missing.jsonl"),
    ],
)
def test_user_mistakes_exit_2_with_one_line_and_write_nothing(
    tmp_path, cache_dir, overrides, expected
):
    bad = tmp_path / "q.jsonl"
    bad.write_text(BAD_QUESTIONS)
    overrides = [
        o.replace("BAD", str(bad)).replace("MISSING", str(tmp_path / "missing.jsonl"))
        for o in overrides
    ]
    out_root = tmp_path / "outputs"
    result = run_kfr(*overrides, f"paths.output_root={out_root}", cache_dir=cache_dir, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1, result.stderr
    assert expected in message[0]
    assert "Traceback" not in result.stderr
    assert not out_root.exists() or not any(out_root.rglob("*")), list(out_root.rglob("*"))


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "kfr"
    assert script.exists(), "run `pip install -e .` (the README's set-up does)"
    assert (REPO_ROOT / "conf" / "config.yaml").is_file()


def test_multirun_sweep_runs_every_cell(tmp_path, cache_dir, questions_file):
    out_root = tmp_path / "outputs"
    result = run_kfr(
        "-m",
        "data=custom",
        f"data.questions={questions_file}",
        "eval.shots=0,2",
        f"paths.output_root={out_root}",
        cache_dir=cache_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    found = sorted(out_root.rglob("results.json"))
    assert len(found) == 2
    assert sorted(json.loads(p.read_text())["cell"]["shots"] for p in found) == [0, 2]

"""benchmarks/gpu_check.sh: the dry run's plumbing on the CPU, the summary it writes, the no-GPU
exit, and the figures' arithmetic. The whole dry run takes minutes on 2 cores: the script runs
two cheap steps here (the others are recorded as not selected), the summary writer all of them."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from argparse import Namespace

import pytest
import torch

from benchmarks import gpu_check
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.sh"


def _no_gpu() -> bool:
    if torch.cuda.is_available() or not shutil.which("timeout"):
        return False
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        return "GPU " not in listed.stdout
    return True


def _assert_summary(report: dict) -> None:
    assert [s["name"] for s in report["steps"]] == list(gpu_check.STEPS)
    for step in report["steps"]:
        assert step["status"] in {"passed", "failed", "skipped"}, step
        assert step["status"] == "passed" or step["reason"], step  # a skip says why
        assert isinstance(step["duration_s"], int | float)
        for name, value in step["figures"].items():
            assert gpu_check.is_number(value), (step["name"], name, value)


@pytest.mark.skipif(not shutil.which("timeout"), reason="needs coreutils timeout")
def test_dry_run_writes_a_summary_with_every_step(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out), "--steps", "gpu_tests,faiss"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "KFR_GPU_PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / gpu_check.SUMMARY_JSON).read_text())
    _assert_summary(report)
    assert report["dry_run"] is True and report["complete"] is True and report["exit_code"] == 0
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["gpu_tests"]["status"] == "passed"
    assert steps["gpu_tests"]["figures"]["tests"] >= 1
    assert steps["gpu_tests"]["figures"]["failed"] == 0
    # The CPU side of FAISS ran; the GPU side is skipped with its reason.
    assert steps["faiss"]["status"] == "skipped" and steps["faiss"]["reason"]
    assert steps["faiss"]["figures"]["Flat.cpu_recall_vs_flat"] == 1.0
    assert steps["qlora"]["reason"] == "not selected (--steps)"
    assert report["environment"]["torch"] == torch.__version__
    assert report["setup"]["status"] in {"passed", "skipped"}
    markdown = (out / gpu_check.SUMMARY_MD).read_text()
    assert "| faiss | skipped |" in markdown and "| gpu_tests | passed |" in markdown
    assert "===== faiss =====" in (out / gpu_check.SUMMARY_LOG).read_text()


@pytest.mark.skipif(not _no_gpu(), reason="only where there is no GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stdout.strip().splitlines()) == 1 and "no GPU" in done.stdout
    assert not (tmp_path / "out").exists()


def test_summary_writer_covers_every_step_and_keeps_figures_numeric(tmp_path):
    steps = [gpu_check.StepResult(name, gpu_check.TITLES[name]) for name in gpu_check.STEPS]
    steps[0].set("passed")
    steps[1].set("failed", "exit code 1: pytest -m gpu")
    steps[3].figure("full.kfr_tokens_per_s", 123456.7)
    steps[3].figure("peak_tflops_datasheet", None)  # unknown: left out, never null
    steps[3].figure("nan", math.nan)
    steps[3].figure("flag", True)
    steps[3].set("passed")
    args = Namespace(dry_run=False, budget=450)
    setup = {"status": "skipped", "note": "nothing installed", "duration_s": 3}
    env = {"gpu_name": "NVIDIA H200", "driver": "580.1", "torch": "2.11.0", "torch_cuda": "13.0"}
    report = gpu_check.summary(args, "now", 12.0, setup, env, steps, finished=True)
    gpu_check.write_summary(tmp_path, report, [])
    loaded = json.loads((tmp_path / gpu_check.SUMMARY_JSON).read_text())
    _assert_summary(loaded)
    assert loaded["exit_code"] == 1  # one step failed
    assert loaded["steps"][3]["figures"] == {"full.kfr_tokens_per_s": 123456.7}
    markdown = (tmp_path / gpu_check.SUMMARY_MD).read_text()
    assert "| gpu_name | NVIDIA H200 |" in markdown and "| driver | 580.1 |" in markdown
    assert "| gpu_tests | failed |" in markdown and "exit code 1" in markdown


def test_exit_code_is_0_when_every_step_passed_or_was_skipped():
    steps = [gpu_check.StepResult("a", "").set("passed"), gpu_check.StepResult("b", "")]
    steps[1].set("skipped", "faiss without GPU support (pip faiss-cpu)")
    assert gpu_check.exit_code({"status": "passed"}, steps) == 0
    assert gpu_check.exit_code({"status": "failed"}, steps) == 1


def test_mfu_and_datasheet_peaks():
    # 135M parameters at 500k tokens/s on a 989.4 TFLOP/s GPU: 6 * 1.35e8 * 5e5 / 9.894e14.
    assert gpu_check.mfu(135e6, 5e5, 989.4) == pytest.approx(100 * 4.05e14 / 9.894e14)
    assert gpu_check.datasheet_bf16_tflops("NVIDIA H200") == (989.4, "H200")
    assert gpu_check.datasheet_bf16_tflops("NVIDIA H200 NVL")[0] == 835.5
    assert gpu_check.datasheet_bf16_tflops("NVIDIA H100 PCIe")[0] == 756.5
    assert gpu_check.datasheet_bf16_tflops("NVIDIA H100 80GB HBM3")[0] == 989.4
    assert gpu_check.datasheet_bf16_tflops("NVIDIA GH200 480GB")[1] == "GH200"
    assert gpu_check.datasheet_bf16_tflops("Tesla T4") == (None, None)


def test_junit_counts(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="t" name="a"/>'
        '<testcase classname="t" name="b"><skipped message="needs a CUDA device"/></testcase>'
        '<testcase classname="t" name="c"><failure message="x"/></testcase>'
        "</testsuite></testsuites>"
    )
    counts = gpu_check.junit_counts(xml)
    assert {k: counts[k] for k in ("tests", "passed", "failed", "errors", "skipped")} == {
        "tests": 3,
        "passed": 1,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
    }
    assert counts["skip_reasons"] == {"t.b": "needs a CUDA device"}
    assert gpu_check.junit_counts(tmp_path / "missing.xml") == {}


def test_gpu_test_files_are_the_marked_ones():
    files = gpu_check.gpu_test_files()
    assert "tests/unit/test_retrieval_index.py" in files
    assert "tests/integration/test_finetune.py" in files
    assert "tests/unit/test_gpu_check.py" not in files

"""The offline GPU check's plumbing (benchmarks/gpu_check.sh, gpu_check.py, gpu_cells.py,
gpu_bundle.py, gpu_summary.py): the plan of cells and their overrides (every one composes, on the
GPU and in the dry run), what is read back from results.json, the summary files, exit codes,
time boxes, and the bundle's size limit and rebuilt wheels. Nothing here trains or scores; one
test runs the script's prepare step end to end on the CPU (~15 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_bundle, gpu_cells, gpu_check, gpu_schedule, gpu_summary
from tests.conftest import REPO_ROOT, compose_config

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.sh"
PATHS = {
    "tokenizer": Path("/b/tok"),
    "encoder": Path("/w/enc"),
    "cache_dir": Path("/w/cache"),
    "run_dir": Path("/w/run"),
    "output_root": Path("/w/out"),
}


KFR_CELLS = [c for c in gpu_cells.CELLS if c.module == "kfr.cli"]  # the rest: gpu_bench


def _overrides(cell, dry):
    return gpu_cells.cell_overrides(cell, dry=dry, **PATHS)


def test_the_plan_has_every_cell_type_once():
    names = [c.name for c in gpu_cells.CELLS]
    assert len(names) == len(set(names))
    assert ("prepare", *names, "gpu_tests") == gpu_check.STEPS
    # (qa_ft, distill and raft train one epoch: finetune.epochs=1)
    made = {frozenset(c.overrides) - {"finetune.epochs=1"} for c in gpu_cells.CELLS}
    for wanted in (
        {"method=base", "model.dtype=float32"},
        {"method=base", "model.dtype=bfloat16"},
        {"method=base", "model.dtype=float32", f"eval.shots={gpu_cells.LONG_SHOTS}"},
        {"method=base", "model.dtype=bfloat16", f"eval.shots={gpu_cells.LONG_SHOTS}"},
        {"method=ft", "finetune=full", "trainer=gpu"},
        {"method=ft", "finetune=lora", "trainer=gpu"},
        {"method=ft", "finetune=qlora", "trainer=gpu"},
        {"method=ft", "finetune=lora", "trainer=ddp", "trainer.devices=1"},
        {"method=ft", "finetune=full", "trainer=fsdp", "trainer.devices=1"},
        {"method=qa_ft", "trainer=gpu"},
        {"method=distill", "trainer=gpu"},
        {"method=raft", "trainer=gpu"},
        {"method=rag"},
    ):
        assert frozenset(wanted) in made, wanted
    # Every fine-tuning cell trains on the GPU, and the time boxes fit the 8 minutes.
    for cell in KFR_CELLS:
        assert cell.trains == any(o.startswith("trainer=") for o in cell.overrides), cell.name
        # A process group binds a rendezvous port: those cells never run side by side.
        distributed = {"trainer=ddp", "trainer=fsdp"} & set(cell.overrides)
        assert cell.distributed == bool(distributed), cell.name
    assert sum(gpu_check.BOX_S.values()) > gpu_check.BUDGET_S  # the budget is the real cap
    assert gpu_check.BUDGET_S <= 480 - 30  # install and start-up inside 8 minutes


def test_gpu_and_dry_run_overrides():
    ddp = gpu_cells.BY_NAME["ft_lora_ddp"]
    gpu = _overrides(ddp, dry=False)
    assert set(gpu_cells.SHAPE_135M) <= set(gpu) and "model.device=cuda" in gpu
    assert "model.tokenizer=/b/tok" in gpu and "eval.control=null" in gpu
    assert "hydra.run.dir=/w/run" in gpu and "paths.cache_dir=/w/cache" in gpu
    assert not any("accelerator" in o for o in gpu)
    dry = _overrides(ddp, dry=True)
    assert not set(gpu_cells.SHAPE_135M) & set(dry)
    assert {"model.device=cpu", "trainer.accelerator=cpu", "finetune.epochs=1"} <= set(dry)
    assert f"data.novel_facts.n_entities={gpu_cells.DRY_ENTITIES}" in dry
    rag = _overrides(gpu_cells.BY_NAME["rag"], dry=False)
    assert {"retriever.source=hf", "retriever.path=/w/enc", "retriever.device=cuda"} <= set(rag)
    assert not any(o.startswith(("finetune", "trainer")) for o in rag)
    assert gpu_cells.BY_NAME["ft_full_fsdp"].dry_skip  # Lightning: no FSDP on the CPU


@pytest.mark.parametrize("dry", [False, True], ids=["gpu", "dry"])
def test_every_cell_composes(dry):
    """The typed schema checks every key and value: a wrong override fails here, not on the GPU."""
    for cell in KFR_CELLS:
        overrides = [o for o in _overrides(cell, dry) if not o.startswith("hydra.")]
        cfg = compose_config(overrides)
        assert cfg.model.tokenizer == "/b/tok" and cfg.eval.control is None
        assert cfg.model.device == ("cpu" if dry else "cuda")
        if not dry:
            assert cfg.model.random_init.num_hidden_layers == 30
        if cell.trains:
            assert cfg.trainer.accelerator == ("cpu" if dry else "gpu")
            assert cfg.trainer.precision == "bf16-mixed"


def test_paths_with_odd_characters_survive_hydra():
    odd = Path("/tmp/my dir/it's@1=2")
    assert gpu_cells.hydra_value(Path("/tmp/a-b_c.d/e")) == "/tmp/a-b_c.d/e"
    cfg = compose_config([f"model.tokenizer={gpu_cells.hydra_value(odd)}"])
    assert cfg.model.tokenizer == str(odd)


def _results(device="cuda:0", steps=24, tokens=2400, sequences=240):
    return {
        "metrics": {"acc": 0.25, "n": 240, "recall_at_k": 0.5, "acc_ci95": [0.2, 0.3]},
        "timings": {"load_model_s": 2.5, "score_s": 1.0, "questions_per_s": 240.0},
        "scoring": {"device": device, "tokens": tokens, "sequences": sequences},
        "finetune": {"steps": steps, "tokens_per_s": 1e5, "precision": "bf16-mixed"},
        "retrieval": {"faiss_device": "cpu", "timings": {"index_s": 0.5}},
    }


def test_cell_figures_and_problems():
    numbers, text = gpu_cells.cell_figures(_results())
    assert numbers["acc"] == 0.25 and numbers["questions_per_s"] == 240.0
    assert numbers["finetune.tokens_per_s"] == 1e5 and numbers["timings.load_model_s"] == 2.5
    assert numbers["tokens_per_question"] == 10.0 and numbers["retrieval.index_s"] == 0.5
    assert all(isinstance(v, int | float) for v in numbers.values())  # no lists, no None
    assert text == {"scoring_device": "cuda:0", "precision": "bf16-mixed", "faiss_device": "cpu"}
    cells = gpu_cells.BY_NAME
    assert gpu_cells.cell_problem(cells["raft"], _results(), dry=False) is None
    assert "not the GPU" in gpu_cells.cell_problem(cells["rag"], _results("cpu"), dry=False)
    assert gpu_cells.cell_problem(cells["rag"], _results("cpu"), dry=True) is None
    assert "no training" in gpu_cells.cell_problem(cells["ft_full"], _results(steps=0), dry=True)
    long = cells["base_long_bf16"]
    assert "cached path" in gpu_cells.cell_problem(long, _results(), dry=False)
    assert gpu_cells.cell_problem(long, _results(tokens=300 * 240), dry=False) is None


def test_last_error_line_and_exit_codes():
    traceback = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA error: boom\n"
    assert gpu_summary.last_error_line(traceback + "# exit code 1\n") == (
        "RuntimeError: CUDA error: boom"
    )
    user = "loading\nkfr: error: trainer.precision: bf16-mixed training needs a GPU\n"
    assert gpu_summary.last_error_line(user).startswith("kfr: error: trainer.precision")
    assert gpu_summary.last_error_line("a\nlast words\n") == "last words"
    assert gpu_summary.exit_code(["passed", "skipped"], {"status": "passed"}) == 0
    assert gpu_summary.exit_code(["passed", "failed"], {"status": "passed"}) == 1
    assert gpu_summary.exit_code(["skipped"], {"status": "failed"}) == 1


def test_junit_counts(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="t" name="a"/>'
        '<testcase name="b"><skipped message="needs a CUDA device"/></testcase>'
        '<testcase name="c"><failure message="x"/></testcase></testsuite></testsuites>'
    )
    assert gpu_summary.junit_counts(xml) == {
        "tests": 3,
        "passed": 1,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
    }
    assert gpu_summary.junit_counts(tmp_path / "missing.xml") == {}


def test_a_step_over_its_time_box_is_killed_with_its_children(tmp_path):
    log = tmp_path / "step.log"
    started = time.monotonic()
    rc = gpu_check.run_boxed(["sh", "-c", "sleep 60 & sleep 60"], log, 1.0, {})
    assert rc == 124 and time.monotonic() - started < 20
    assert log.read_text().splitlines()[-1] == "# exit code 124"


def test_a_used_up_budget_fails_the_steps_and_the_summary_says_so(tmp_path):
    (tmp_path / "bundle" / "wheels").mkdir(parents=True)
    argv = ["run", "--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "out")]
    code = gpu_check.main([*argv, "--dry-run", "--budget", "1", "--only", "base_fp32,rag"])
    assert code == 1
    report = json.loads((tmp_path / "out" / gpu_check.SUMMARY_JSON).read_text())
    assert report["exit_code"] == 1 and report["finished"] and report["dry_run"] is True
    steps = {s["name"]: s for s in report["steps"]}
    assert [s["name"] for s in report["steps"]] == list(gpu_check.STEPS)
    assert steps["base_fp32"]["status"] == "failed" and "budget" in steps["base_fp32"]["reason"]
    assert steps["prepare"]["reason"] == "not selected (--only)"
    markdown = (tmp_path / "out" / gpu_check.SUMMARY_MD).read_text()
    assert "| base_fp32 | failed |" in markdown and "FAISS on the CPU" in markdown
    assert (tmp_path / "out" / gpu_check.SUMMARY_LOG).is_file()


def test_bundle_size_limit(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "big.whl").write_bytes(b"0" * (2 * 2**20))
    assert gpu_bundle.size_problem(tmp_path, limit_mib=3) is None
    problem = gpu_bundle.size_problem(tmp_path, limit_mib=1)
    assert "2.0 MiB, over the 1 MiB limit" in problem and "wheels/big.whl" in problem


def test_trimmed_bitsandbytes_keeps_the_cpu_and_cuda_13_libraries(tmp_path):
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm72", "xpu2025"]
    files = {f"bitsandbytes/libbitsandbytes_{lib}.so": lib.encode() * 100 for lib in libs}
    files |= {"bitsandbytes/__init__.py": b"", "bitsandbytes-0.50.2.dist-info/RECORD": b""}
    (tmp_path / "src").mkdir()
    wheel = gpu_bundle.write_wheel(tmp_path / "src" / "bitsandbytes-0.50.2-py3-none-x.whl", files)
    trimmed = gpu_bundle.trim_bitsandbytes(wheel, tmp_path)
    assert gpu_bundle.bnb_cuda_library("13.0") == "libbitsandbytes_cuda130.so"
    with zipfile.ZipFile(trimmed) as whl:
        names = set(whl.namelist())
        record = whl.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    libs_left = {Path(n).name for n in names if "libbitsandbytes" in n}
    assert libs_left == {"libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"}
    assert sorted(line.split(",")[0] for line in record.splitlines()) == sorted(names)


def test_gpu_test_files_are_the_marked_ones():
    files = gpu_check.gpu_test_files()
    assert "tests/unit/test_retrieval_index.py" in files
    assert "tests/integration/test_finetune.py" in files
    assert "tests/unit/test_gpu_check.py" not in files


def test_the_script_needs_a_bundle(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "--bundle DIR is required" in done.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_installs_the_bundle_and_runs_prepare_on_the_cpu(tmp_path):
    """End to end on the CPU: pip --target install of a bundle (here one small wheel, which must
    come first on the path), the probe, the encoder's random weights, the summary."""
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    info = "kfr_bundle_probe-1.0.dist-info"
    gpu_bundle.write_wheel(
        bundle / "wheels" / "kfr_bundle_probe-1.0-py3-none-any.whl",
        {
            "kfr_bundle_probe.py": b"INSTALLED = True\n",
            f"{info}/METADATA": b"Metadata-Version: 2.1\nName: kfr-bundle-probe\nVersion: 1.0\n",
            f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            f"{info}/RECORD": b"",
        },
    )
    gpu_bundle.save_encoder_template(bundle / gpu_bundle.ENCODER)
    out = tmp_path / "out"
    argv = ["bash", str(SCRIPT), "--bundle", str(bundle), "--out", str(out), "--dry-run"]
    done = subprocess.run(
        [*argv, "--only", "prepare", "--python", sys.executable],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / gpu_check.SUMMARY_JSON).read_text())
    assert report["exit_code"] == 0 and report["install"]["status"] == "passed"
    assert report["steps"][0]["status"] == "passed"
    assert "===== prepare =====" in (out / gpu_check.SUMMARY_LOG).read_text()


def test_the_scheduler_overlaps_cells_but_not_prepare_gpu_tests_or_distributed_ones():
    Job = gpu_schedule.Job
    plan = [Job("prepare", alone=True), Job("a"), Job("ddp", group="d"), Job("b"), Job("c")]
    plan += [Job("fsdp", group="d"), Job("e"), Job("gpu_tests", alone=True)]
    spans, lock, done = {}, threading.Lock(), []

    def run(name):
        began = time.monotonic()
        time.sleep(0.3 if name in ("ddp", "fsdp") else 0.15)
        with lock:
            spans[name] = (began, time.monotonic())

    def on_done(name, peak):
        done.append(name)
        return True

    peak = gpu_schedule.run_plan(plan, run, 3, on_done)
    assert peak == 3 and sorted(done) == sorted(j.name for j in plan)
    cells = [n for n in spans if n not in ("prepare", "gpu_tests")]
    assert all(spans["prepare"][1] <= spans[n][0] for n in cells)
    assert all(spans[n][1] <= spans["gpu_tests"][0] for n in cells)
    assert spans["ddp"][1] <= spans["fsdp"][0]  # one process group at a time
    assert spans["a"][0] < spans["ddp"][1] and spans["ddp"][0] < spans["a"][1]  # overlapped
    # fsdp waits for ddp, the cells after it do not.
    assert spans["e"][0] < spans["fsdp"][0]
    assert gpu_schedule.run_plan(plan[:3], run, 1, lambda name, peak: name != "prepare") == 1


def test_steps_run_side_by_side_and_the_summary_keeps_plan_order(tmp_path, monkeypatch):
    """Stub steps finishing out of order (the first cells last): the summary is in plan order,
    says how many ran at once, and prepare and gpu_tests ran alone."""
    pause = {name: 0.05 * (len(gpu_check.STEPS) - i) for i, name in enumerate(gpu_check.STEPS)}

    def step(check, one):
        time.sleep(pause[one.name])
        one.set("passed")

    for method in ("prepare", "gpu_tests", "cell"):
        monkeypatch.setattr(gpu_check.Check, method, step)
    (tmp_path / "bundle" / "wheels").mkdir(parents=True)
    argv = ["run", "--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "out")]
    assert gpu_check.main([*argv, "--dry-run", "--jobs", "3"]) == 0
    report = json.loads((tmp_path / "out" / gpu_check.SUMMARY_JSON).read_text())
    assert [s["name"] for s in report["steps"]] == list(gpu_check.STEPS)
    assert report["jobs"] == 3 and report["peak_jobs"] == 3
    opted = {s["name"]: s["status"] for s in report["steps"] if s["name"] in gpu_cells.OPT_IN}
    assert opted == dict.fromkeys(gpu_cells.OPT_IN, "skipped")  # only when --only names them
    steps = [s for s in report["steps"] if s["name"] not in gpu_cells.OPT_IN]
    assert all(s["status"] == "passed" for s in steps)
    first, last = steps[0], steps[-1]
    assert all(
        round(first["started_s"] + first["duration_s"], 1) <= s["started_s"] for s in steps[1:]
    )
    # (sums of figures rounded to 0.1 s: compared at that precision)
    assert all(round(s["started_s"] + s["duration_s"], 1) <= last["started_s"] for s in steps[:-1])
    md = (tmp_path / "out" / gpu_check.SUMMARY_MD).read_text()
    assert "up to 3 steps at a time, at most 3 ran at once" in md


def test_the_benchmark_step():
    bench = gpu_cells.BY_NAME["gpu_bench"]
    assert bench.module == "benchmarks.gpu_bench" and bench.alone
    job = next(j for j in gpu_check.PLAN if j.name == "gpu_bench")
    assert job.alone  # nothing else on the GPU while it times
    gpu, dry = _overrides(bench, dry=False), _overrides(bench, dry=True)
    assert gpu[:4] == ["--out", "/w/run", "--tokenizer", "/b/tok"] and "--budget" in gpu
    assert "--dry-run" in dry and "--budget" not in dry
    row = {"name": "fit_x", "kind": "fit", "status": "passed", "ratio": 1.2}
    row.update(kfr={"mfu": 0.3}, peer_side={"mfu": 0.2})
    results = {"benchmark": "kfr gpu_bench", "exit_code": 0, "cases": [row]}
    numbers, _ = gpu_cells.cell_figures(results)
    assert numbers == {"fit_x.ratio": 1.2, "fit_x.kfr_mfu": 0.3, "fit_x.peer_mfu": 0.2}
    assert gpu_cells.cell_problem(bench, results, dry=False) is None
    assert gpu_cells.cell_problem(bench, {**results, "exit_code": 1}, dry=False)
    assert "gpu_bench" in gpu_cells.OPT_IN  # a plain check does not run it

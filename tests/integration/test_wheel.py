"""The built wheel is a working kfr: it ships conf/ as kfr/conf, and its `kfr` command runs a cell
from a folder outside the checkout, installed alone into a fresh virtual environment.

The fresh venv sees this environment's third-party packages through a .pth file naming their
site-packages directory. A path line in a .pth file only adds that directory to ``sys.path``; the
.pth files inside it are not processed, so the editable install of kfr (a .pth hook there) stays
out and ``import kfr`` can only find the wheel's copy.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from kfr.core.paths import CONFIG_DIR, config_dir
from tests.conftest import REPO_ROOT

# What a build reads: copied out of the checkout so the build leaves no build/ or *.egg-info in it
# and no stale build/lib from an earlier build can slip into the wheel.
_SOURCES = ("pyproject.toml", "README.md", "kfr", "conf")
_OPTIONAL_SOURCES = ("setup.py", "setup.cfg", "MANIFEST.in", "LICENSE", "LICENSE.txt")


def test_config_dir_finds_the_checkouts_config_tree():
    found = config_dir()
    assert (found / "config.yaml").is_file()
    assert (found / "model" / "tiny_llama.yaml").is_file()
    # tests import kfr from the checkout: it reads the conf/ being edited, not a packaged copy
    assert found == REPO_ROOT / "conf"
    assert Path(CONFIG_DIR) == found


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in _SOURCES + _OPTIONAL_SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=skip)
        elif path.is_file():
            shutil.copy2(path, src / name)
    out = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)], timeout=600
    )
    (wheel,) = out.glob("kfr-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv without pip or kfr that imports this environment's other packages."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=300)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    ours = dict.fromkeys(
        [
            *site.getsitepackages(),
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
        ]
    )
    lines = [p for p in ours if Path(p).is_dir()]
    (Path(purelib) / "_kfr_test_parent_env.pth").write_text("\n".join(lines) + "\n")
    return python, Path(purelib)


@pytest.mark.integration
def test_wheel_ships_conf_and_runs_a_cell_outside_the_checkout(tmp_path, cache_dir):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("kfr/") for n in names if n.startswith("kfr/conf/")}
    expected = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "conf").rglob("*.yaml")
        if p.relative_to(REPO_ROOT / "conf").parts[0] != "local"
    }
    assert "conf/config.yaml" in shipped
    assert shipped == expected  # every config file, and not the machine-specific conf/local/

    python, purelib = _fresh_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {
        "KFR_CACHE_DIR": str(cache_dir),
        "HF_HUB_OFFLINE": "1",
        "VIRTUAL_ENV": str(python.parent.parent),
    }
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    # --ignore-installed: pip sees the editable kfr's metadata through the .pth; leave it alone
    _run([*pip, "install", "--no-deps", "--ignore-installed", str(wheel)], env=env, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [
            str(python),
            "-c",
            "import kfr, kfr.core.paths as p; print(kfr.__file__); print(p.config_dir())",
        ],
        cwd=elsewhere,
        env=env,
        timeout=120,
    ).stdout.splitlines()
    assert Path(where[0]).parent == purelib / "kfr", f"kfr imported from {where[0]}, not the wheel"
    assert Path(where[1]) == purelib / "kfr" / "conf"

    outputs = tmp_path / "outputs"
    kfr = python.parent / "kfr"
    run = subprocess.run(
        [
            str(kfr),
            "model=tiny_llama",
            "data.limit=3",
            "eval.probes=null",  # the probe files ship with the generator too
            "logger=none",
            f"paths.output_root={outputs}",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    (results_file,) = outputs.rglob("results.json")
    results = json.loads(results_file.read_text())
    assert results["metrics"]["n"] == 3
    lines = (results_file.parent / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sum("family" not in r for r in records) == 3  # then the probe families' questions
    assert {r["family"] for r in records if "family" in r} == set(results["metrics"]["probes"])

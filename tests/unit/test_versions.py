"""The library versions kfr declares: refused at start-up when outside their range
(kfr.core.versions), the lowest-versions CI environment (constraints-lowest.txt) installing
exactly the lower bounds pyproject.toml declares, and what kfr repairs in older releases."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from kfr.core import versions
from kfr.core.errors import UserError
from tests.conftest import REPO_ROOT

CONSTRAINTS = REPO_ROOT / "constraints-lowest.txt"
# The libraries whose APIs kfr leans on: `make test-lowest` installs each at its lower bound.
LOWEST_TESTED = {
    "torch",
    "transformers",
    "lightning",
    "peft",
    "accelerate",
    "sentence-transformers",
    "bitsandbytes",
}
# PyPI's Linux torch wheels below the CPU build on this machine are CUDA builds (GBs): CI tests
# the oldest CPU build it can install; the declared bound is verified on the GPU machine.
CPU_BUILD_ONLY = {"torch"}


def _declared() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        lines = tomllib.load(f)["project"]["dependencies"]
    return {(req := Requirement(line)).name: req for line in lines}


def _lower_bound(req: Requirement) -> Version:
    (bound,) = [Version(s.version) for s in req.specifier if s.operator == ">="]
    return bound


def _pins() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = Version(version.strip())
    return pins


def test_the_lowest_environment_pins_the_declared_lower_bounds():
    declared, pins = _declared(), _pins()
    assert set(pins) == LOWEST_TESTED
    for name, pin in pins.items():
        bound = _lower_bound(declared[name])
        if name in CPU_BUILD_ONLY:
            assert bound <= pin and declared[name].specifier.contains(pin), name
        else:
            assert pin == bound, f"{name}: constraints-lowest.txt pins {pin}, pyproject {bound}"


def test_the_installed_libraries_are_in_range():
    assert versions.runtime_requirements(), "kfr's metadata: is kfr installed (pip install -e .)?"
    assert versions.unsupported() == []
    versions.check_supported_versions()


def _pretend(monkeypatch, **installed: str) -> None:
    real = versions.installed_version
    fake = {name.replace("_", "-"): version for name, version in installed.items()}
    monkeypatch.setattr(versions, "installed_version", lambda name: fake.get(name) or real(name))
    monkeypatch.delenv(versions.ALLOW_ENV, raising=False)


def test_an_older_library_is_refused_naming_it_its_version_and_the_range(monkeypatch):
    _pretend(monkeypatch, torch="2.3.1")
    with pytest.raises(UserError) as caught:
        versions.check_supported_versions()
    message = str(caught.value)
    torch_range = versions.version_range(_declared()["torch"])
    assert "\n" not in message and torch_range.startswith("torch>=")
    assert f"torch 2.3.1 is installed, kfr needs {torch_range}" in message


def test_every_library_out_of_range_is_named(monkeypatch):
    _pretend(monkeypatch, transformers="4.57.6", peft="0.1.0")
    names = [req.name for req, _ in versions.unsupported()]
    assert names == ["transformers", "peft"]


@pytest.mark.parametrize("version", ["2.13.0+cpu", "2.12.0a0+git1234", "2.13.0.post1"])
def test_local_builds_and_prereleases_count_by_their_release(monkeypatch, version):
    _pretend(monkeypatch, torch=version)
    assert "torch" not in [req.name for req, _ in versions.unsupported()]


def test_a_missing_library_is_left_to_its_import(monkeypatch):
    monkeypatch.setattr(versions, "installed_version", lambda name: None)
    assert versions.unsupported() == []


def test_the_override_lets_an_unsupported_version_run(monkeypatch):
    _pretend(monkeypatch, torch="2.3.1")
    monkeypatch.setenv(versions.ALLOW_ENV, "1")
    versions.check_supported_versions()


# Each command, and the arguments it gets (a Hydra command reads sys.argv).
COMMANDS = {
    "kfr": ("main", ["model=tiny_llama"]),
    "kfr-index": ("index", []),
    "kfr-kb": ("kb", ["--help"]),
    "kfr-questions": ("questions", ["--help"]),
    "kfr-mmlu": ("mmlu", ["subjects"]),
    "kfr-novel-facts": ("novel_facts", ["--help"]),
    "kfr-report": ("report", ["."]),
}


@pytest.mark.parametrize("prog", COMMANDS)
def test_every_command_refuses_before_any_work(prog, monkeypatch, tmp_path, capsys):
    module, args = COMMANDS[prog]
    entry = importlib.import_module(f"kfr.cli.{module}").main
    _pretend(monkeypatch, transformers="4.57.6")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [prog, *args])
    with pytest.raises(SystemExit) as done:
        entry() if module in ("main", "index") else entry(args)
    assert done.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"{prog}: error: transformers 4.57.6 is installed, kfr needs ")
    assert out.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_installed_kfr_command_refuses_with_exit_code_2(tmp_path):
    # The real entry point in a fresh interpreter, with the installed torch reported as 2.3.1.
    code = (
        "import importlib.metadata as m, sys\n"
        "real = m.version\n"
        "m.version = lambda name: '2.3.1' if name == 'torch' else real(name)\n"
        "sys.argv = ['kfr', 'model=tiny_llama']\n"
        "from kfr.cli.main import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != versions.ALLOW_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kfr: error: torch 2.3.1 is installed, kfr needs torch>=")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert list(tmp_path.iterdir()) == []


class _Tokenizer:
    """The special-token surface of a converted GGUF tokenizer."""

    def __init__(self, bos: int, eos: int, pad: int | None) -> None:
        self.vocab = {1: "<|im_start|>", 2: "<|im_end|>", 7: "<eos>"}
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos, eos, pad

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return self.vocab[token_id]

    def __setattr__(self, name: str, value) -> None:
        if name in ("eos_token", "pad_token"):  # a token's id follows its text, as in transformers
            ids = {v: k for k, v in self.vocab.items()}
            super().__setattr__(f"{name}_id", ids[value])
        super().__setattr__(name, value)


def test_a_gguf_tokenizer_that_ends_texts_with_its_bos_gets_the_models_eos():
    # transformers 5.6-5.17 convert SmolLM2's GGUF with <|im_start|> as both BOS and EOS.
    from types import SimpleNamespace

    from kfr.models.gguf_package import repair_special_tokens

    broken = _Tokenizer(bos=1, eos=1, pad=None)
    repair_special_tokens(broken, SimpleNamespace(eos_token_id=2, pad_token_id=2))
    assert (broken.bos_token_id, broken.eos_token_id, broken.pad_token_id) == (1, 2, 2)
    # 5.18 and later (EOS already its own token): left alone, whatever the config says.
    right = _Tokenizer(bos=1, eos=2, pad=None)
    repair_special_tokens(right, SimpleNamespace(eos_token_id=7, pad_token_id=7))
    assert (right.eos_token_id, right.pad_token_id) == (2, None)
    # A config with several EOS ids names no single one to take.
    several = _Tokenizer(bos=1, eos=1, pad=None)
    repair_special_tokens(several, SimpleNamespace(eos_token_id=[2, 7], pad_token_id=None))
    assert several.eos_token_id == 1

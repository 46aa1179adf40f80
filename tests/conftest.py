"""Shared fixtures: the cache directory, composed configs and the test models.

The cache is the one users get (``KFR_CACHE_DIR`` or the user cache dir), so the embedded
model is converted once per machine, not once per test run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from platformdirs import user_cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"

# No hub on these machines: fail at once instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The default logger is W&B (offline); tests that check W&B turn it on themselves.
os.environ.setdefault("WANDB_MODE", "disabled")


def model_config(name: str):
    """conf/model/<name>.yaml as the typed object a cell gets."""
    from kfr.core.schema import ModelConfig

    merged = OmegaConf.merge(
        OmegaConf.structured(ModelConfig), OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    )
    return OmegaConf.to_object(merged)


def compose_config(overrides: list[str] | None = None):
    """The config a `kfr` command with these overrides would run (without Hydra's own node)."""
    from hydra import compose, initialize_config_dir

    import kfr.core.identity  # noqa: F401  (registers the schema and kfr's resolvers)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))


@pytest.fixture(scope="session")
def tiny_lm(cache_dir):
    from kfr.models import load_model

    return load_model(model_config("tiny_llama"), cache_dir)


@pytest.fixture(scope="session")
def smollm2(cache_dir):
    from kfr.models import load_model

    return load_model(model_config("smollm2_135m"), cache_dir)


@pytest.fixture
def ft_cache(tmp_path, cache_dir, tiny_lm):
    """A fresh cache for fine-tuned checkpoints that shares the converted models."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(cache_dir / "models", target_is_directory=True)
    return tmp_path / "cache"

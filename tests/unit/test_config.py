"""Every shipped config composes and validates; mistakes fail at composition with the key."""

from __future__ import annotations

import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kfr.core.identity import config_hash
from tests.conftest import CONF_DIR, compose_config

GROUPS = sorted(
    p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in {"hydra", "local"}
)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{group}={option}" for group in GROUPS for option in _options(group)],
)
def test_every_shipped_config_composes(override):
    extra = ["data.questions=q.jsonl"] if override == "data=custom" else []
    cfg = compose_config([override, *extra])
    # Resolving every interpolation catches typos in ${...} references.
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.model.name and cfg.data.name and cfg.method.name


def test_default_config_is_the_embedded_study_cell():
    cfg = compose_config()
    assert cfg.model.name == "smollm2_135m"
    assert cfg.data.name == "novel_facts"
    assert cfg.method.name == "base"
    assert cfg.eval.style.value == "cloze"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["eval.shots=five"], "eval.shots"),
        (["eval.style=essay"], "eval.style"),
        (["eval.nonsense=1"], "nonsense"),
        (["model=no_such_model"], "model"),
    ],
)
def test_mistakes_fail_at_composition(overrides, fragment):
    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        compose_config(overrides)
    text = str(info.value) + str(info.value.__cause__ or "")
    assert fragment in text


def test_keys_added_with_plus_are_rejected_by_validation():
    from kfr.core.errors import UserError
    from kfr.core.schema import validate_config

    cfg = compose_config(["+model.quantise=true"])  # `+` bypasses Hydra's struct mode
    with pytest.raises(UserError, match=r"field 'model\.quantise'"):
        validate_config(cfg)
    validate_config(compose_config(["model=tiny_llama"]))


def test_config_hash_ignores_paths_and_progress_but_not_results_settings():
    base = config_hash(compose_config())
    assert base == config_hash(
        compose_config(["paths.output_root=/elsewhere", "eval.progress=false"])
    )
    assert base != config_hash(compose_config(["eval.shots=5"]))
    assert base != config_hash(compose_config(["model=tiny_llama"]))

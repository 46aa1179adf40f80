"""What identifies a cell: one declaration, and the five things derived from it agreeing."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.core.identity import (
    NOT_IDENTITY,
    cell_dirname,
    check_method,
    config_hash,
    not_identity_overrides,
    training_settings,
    variant_key,
)
from kfr.core.schema import KfrConfig, to_plain, typed_config
from kfr.models import load_model
from tests.conftest import CONF_DIR, compose_config, model_config


def _derived(overrides: list[str]) -> tuple[str, str, dict]:
    """(config hash, folder name, training settings) of the cell these overrides make."""
    cfg = compose_config(overrides)
    return config_hash(cfg), cell_dirname(overrides, cfg), training_settings(cfg)


@pytest.mark.parametrize(
    ("base", "change", "matters"),
    [
        (["method=ft", "finetune=full"], "finetune.compute_dtype=float32", False),
        (["method=ft", "finetune=qlora"], "finetune.compute_dtype=float32", True),
        (["method=ft", "finetune=full"], "finetune.lora.r=4", False),
        (["method=ft", "finetune=lora"], "finetune.lora.r=4", True),
        (["method=ft"], "trainer.checkpoint_every_min=5", False),
        (["method=ft"], "finetune.lr=0.5", True),
        (["method=ft", "augment.paraphrases=0"], "augment.source=file", False),
        (["method=ft", "augment.paraphrases=2"], "augment.source=file", True),
    ],
)
def test_hash_folder_and_training_key_agree_on_what_matters(base, change, matters):
    before, after = _derived(base), _derived([*base, change])
    assert (before[0] != after[0]) is matters  # config hash
    assert (change.split("=")[0] in after[1]) is matters  # the cell's folder name
    # What the fine-tuned checkpoint depends on (augment reaches it through the training texts'
    # content, which the cache key adds to these settings).
    assert (before[2] != after[2]) is (matters and not change.startswith("augment."))


def test_methods_that_do_not_read_a_group_ignore_it_everywhere():
    overrides = ["method=base", "retriever.k=5", "finetune.lr=0.5", "seed=1"]
    cfg = compose_config(overrides)
    assert cell_dirname(overrides, cfg) == "method=base,seed=1"
    assert config_hash(cfg) == config_hash(compose_config(["method=base", "seed=1"]))
    rag = ["method=rag", "retriever.k=5"]
    assert cell_dirname(rag, compose_config(rag)) == "method=rag,retriever.k=5"


def test_hydra_uses_the_same_declaration_for_folders_and_exclusions():
    import kfr.core.identity  # noqa: F401  (registers the resolvers)

    overrides = ["method=base", "retriever.k=3", "seed=2", "eval.progress=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweep.subdir == "method=base,seed=2"
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert excluded == not_identity_overrides()
    assert set(excluded) | {"method.reads"} == set(NOT_IDENTITY)


def test_report_variants_ignore_the_table_position_only():
    def variant(*overrides: str) -> str:
        return variant_key(to_plain(typed_config(compose_config(["method=ft", *overrides]))))

    assert variant("seed=0") == variant("seed=3") == variant("eval.shots=5")
    assert variant("augment.paraphrases=2") == variant("augment.paraphrases=4")
    assert variant() != variant("augment.paraphrases=2") != variant("finetune.lr=0.5")


def test_a_method_must_declare_the_groups_its_switches_use():
    check_method({"name": "ft", "finetune": True, "reads": ["finetune", "trainer", "augment"]})
    with pytest.raises(UserError, match=r"method\.reads.*\['trainer'\]"):
        check_method({"name": "x", "finetune": True, "reads": ["finetune"]})
    with pytest.raises(UserError, match="unknown config group"):
        check_method({"name": "x", "reads": ["retreiver"]})
    # results.json written before `reads` existed: derived from the switches.
    legacy = compose_config(["method=rag"])
    plain = OmegaConf.to_container(legacy, resolve=True, enum_to_str=True)
    del plain["method"]["reads"]
    assert config_hash(plain) == config_hash(legacy)


def test_typed_config_is_the_composed_config_unchanged():
    cfg = compose_config(["method=ft_rag", "finetune=lora", "trainer.devices=[0,1]"])
    typed = typed_config(cfg)
    assert isinstance(typed, KfrConfig) and typed_config(typed) is typed
    # What results.json records: the same data, in the same order, as before the typed config.
    expected = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert to_plain(typed) == expected
    assert list(to_plain(typed)) == list(expected)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="no bitsandbytes")
def test_one_max_length_rule_for_full_precision_and_4bit_models(cache_dir):
    cfg = replace(model_config("tiny_llama"), max_length=None)
    base = load_model(cfg, cache_dir)
    quantized = load_model(cfg, cache_dir, quantize_4bit=torch.float32)
    assert base.max_length == quantized.max_length == 2048
    assert quantized.tokenizer.pad_token_id is not None

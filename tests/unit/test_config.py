"""Every shipped config composes and validates; mistakes fail at composition with the key."""

from __future__ import annotations

import copy

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


# ----------------------------------------------------------------------------- value ranges


def _typed(overrides: list[str] | None = None):
    from kfr.core.schema import typed_config

    return typed_config(compose_config(overrides))


def _outside(bounds, is_int: bool) -> list[float]:
    """Values just outside ``bounds`` (one per side that has a bound)."""
    step = 1 if is_int else 0.5
    values = []
    if bounds.low is not None:
        values.append(bounds.low if bounds.low_open else bounds.low - step)
    if bounds.high is not None:
        values.append(bounds.high if bounds.high_open else bounds.high + step)
    return [int(v) if is_int else float(v) for v in values]


def _set(obj, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        obj = getattr(obj, name)
    setattr(obj, last, value)


def test_every_numeric_key_declares_a_range_its_default_is_in():
    """A key added to the schema without a range fails here: every number gets checked."""
    import dataclasses

    from kfr.core.schema import RANGE, Range, numeric_keys

    keys = numeric_keys()
    assert len(keys) > 60 and "eval.batch_size" in dict(keys)
    assert "augment.generator.model.random_init.seed" in dict(keys)  # nested blocks too
    for name, f in keys:
        bounds = f.metadata.get(RANGE)
        assert isinstance(bounds, Range), f"{name}: declare its range with ranged(...)"
        default = f.default
        assert default is not dataclasses.MISSING, name
        assert default is None or default in bounds, f"{name}: default {default} out of range"
        assert bounds.low is not None or bounds.high is not None, f"{name}: no bound at all"


def test_every_numeric_key_outside_its_range_is_a_user_error_naming_it():
    from kfr.core.errors import UserError
    from kfr.core.schema import RANGE, RandomInitConfig, check_ranges, numeric_keys

    base = _typed(["model=tiny_llama"])
    for block in (base.augment.generator.model, base.qa.generator.model):
        block.random_init = RandomInitConfig()  # so that their keys are checked too
    check_ranges(base)
    checked = 0
    for name, f in numeric_keys():
        for bad in _outside(f.metadata[RANGE], "int" in str(f.type)):
            cfg = copy.deepcopy(base)
            _set(cfg, name, [bad] if "list" in str(f.type) else bad)
            with pytest.raises(UserError) as info:
                check_ranges(cfg)
            assert info.value.field == name and info.value.path == "config", name
            assert f"got {bad}" in info.value.message, info.value.message
            checked += 1
    assert checked >= len(numeric_keys())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.batch_size=0", "config: field 'eval.batch_size': must be >= 1, got 0"),
        ("retriever.k=-1", "config: field 'retriever.k': must be >= 0, got -1"),
        ("finetune.lr=0", "config: field 'finetune.lr': must be > 0, got 0.0"),
        ("finetune.lr=nan", "config: field 'finetune.lr': must be > 0, got nan"),
        ("finetune.warmup_ratio=1", "field 'finetune.warmup_ratio': must be in [0, 1), got 1.0"),
        ("qa.max_overlap=1.5", "field 'qa.max_overlap': must be in [0, 1], got 1.5"),
        ("finetune.lora.dropout=-0.1", "field 'finetune.lora.dropout': must be in [0, 1)"),
        ("augment.generator.top_p=0", "field 'augment.generator.top_p': must be in (0, 1]"),
        ("seed=-3", "config: field 'seed': must be >= 0, got -3"),
        ("data.limit=0", "field 'data.limit': must be >= 1, got 0"),
        ("retriever.gpu_ids=[0,-1]", "field 'retriever.gpu_ids': must be >= 0, got -1"),
        ("data.novel_facts.n_entities=2", "field 'data.novel_facts.n_entities': must be in [4,"),
    ],
)
def test_out_of_range_values_fail_when_the_config_is_typed(override, message):
    from kfr.core.errors import UserError

    with pytest.raises(UserError) as info:
        _typed([override])
    assert message in info.value.format()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["retriever.chunk_tokens=64", "retriever.chunk_overlap=64"],
            "field 'retriever.chunk_overlap': must be below retriever.chunk_tokens (64), got 64",
        ),
        (
            ["model=tiny_llama", "model.random_init.hidden_size=65"],
            "field 'model.random_init.hidden_size': must be a multiple of num_attention_heads",
        ),
        (
            ["model=tiny_llama", "model.random_init.num_key_value_heads=3"],
            "field 'model.random_init.num_attention_heads': must be a multiple of",
        ),
        (["trainer.devices=0"], "field 'trainer.devices': must be >= 1"),
        (["trainer.devices=[]"], "field 'trainer.devices': a list of device ids"),
    ],
)
def test_ranges_that_depend_on_another_key(overrides, message):
    from kfr.core.errors import UserError

    with pytest.raises(UserError) as info:
        _typed(overrides)
    assert message in info.value.format()


def test_boundary_values_and_nulls_are_accepted():
    cfg = _typed(
        [
            "retriever.k=0",
            "eval.shots=0",
            "eval.control_confidence=1",
            "finetune.warmup_ratio=0",
            "finetune.max_grad_norm=null",
            "retriever.nprobe=null",
            "trainer.devices=-1",
            "trainer.devices=auto",
            "retriever.chunk_overlap=127",
        ]
    )
    assert cfg.retriever.k == 0 and cfg.finetune.max_grad_norm is None


def test_range_bounds_agree_with_the_data_generators():
    from kfr.core.schema import NovelFactsConfig, QaConfig
    from kfr.data import novel_facts

    def bounds(cls, name):
        import dataclasses

        from kfr.core.schema import RANGE

        return next(f for f in dataclasses.fields(cls) if f.name == name).metadata[RANGE]

    assert bounds(NovelFactsConfig, "n_entities").high == novel_facts.MAX_ENTITIES
    assert bounds(NovelFactsConfig, "n_paraphrases").high == novel_facts.MAX_PARAPHRASES
    most = min(len(t) for t in novel_facts.TRAINING_QUESTION_TEMPLATES.values())
    assert bounds(QaConfig, "per_fact").high == most

"""Typed schema of every config group: the one reference of every key a user can set.

The dataclasses are registered in Hydra's ConfigStore as ``kfr_schema``, the first entry of
``conf/config.yaml``'s defaults list, so every YAML file and command-line override is merged onto
them: an unknown key or a wrong type stops the run at composition time with the key's full name,
before anything is written. Field comments are the reference for users (the README points here).

Import every name from here (``from kfr.core.schema import X``). The groups live by concern:

- :mod:`kfr.core.schema_scoring`: ``model``, ``data``, ``method``, ``retriever``, ``eval``;
- :mod:`kfr.core.schema_training`: ``trainer``, ``finetune``, ``augment``, ``qa``, ``raft``,
  ``distill`` (and the generator model of ``augment`` and ``qa``);
- this module: ``paths``, ``logger`` and the top-level keys of :class:`KfrConfig`, the root that
  holds every group; its registration; the checks of a composed config (:func:`typed_config`);
- :mod:`kfr.core.schema_ranges`: :func:`ranged`, how a numeric key declares its valid range.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from platformdirs import user_cache_dir

from kfr.core.errors import UserError
from kfr.core.schema_ranges import RANGE, Range, ranged
from kfr.core.schema_scoring import (
    DataConfig,
    EncoderSource,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    ModelSource,
    NovelFactsConfig,
    PromptStyle,
    RandomInitConfig,
    RetrieverConfig,
    TrainingRecipe,
)
from kfr.core.schema_training import (
    LLAMA_LINEAR_LAYERS,
    AugmentConfig,
    DistillConfig,
    FinetuneConfig,
    FinetuneMode,
    GeneratorConfig,
    LoraSettings,
    LrSchedule,
    ParaphraseSource,
    QaConfig,
    QaDirections,
    QaSource,
    RaftConfig,
    ReplaySource,
    TeacherContext,
    TrainerConfig,
)

__all__ = [
    "CONFIG_SOURCE",
    "LLAMA_LINEAR_LAYERS",
    "RANGE",
    "AugmentConfig",
    "DataConfig",
    "DistillConfig",
    "EncoderSource",
    "EvalConfig",
    "FinetuneConfig",
    "FinetuneMode",
    "GeneratorConfig",
    "KfrConfig",
    "LoggerConfig",
    "LoraSettings",
    "LrSchedule",
    "MethodConfig",
    "ModelConfig",
    "ModelSource",
    "NovelFactsConfig",
    "ParaphraseSource",
    "PathsConfig",
    "PromptStyle",
    "QaConfig",
    "QaDirections",
    "QaSource",
    "RaftConfig",
    "RandomInitConfig",
    "Range",
    "ReplaySource",
    "RetrieverConfig",
    "TeacherContext",
    "TrackerKind",
    "TrainerConfig",
    "TrainingRecipe",
    "WandbSettings",
    "check_ranges",
    "numeric_keys",
    "ranged",
    "register_schema",
    "schema_keys",
    "to_plain",
    "typed_config",
    "validate_config",
]


@dataclass
class PathsConfig:
    output_root: str = "outputs"  # runs write to <output_root>/<experiment>/...
    cache_dir: str = MISSING  # converted models, generated data, indices


class TrackerKind(str, Enum):
    wandb = "wandb"  # a Weights & Biases run per cell (offline by default; `wandb sync` later)
    csv = "csv"  # metrics.csv in the run directory (fine-tuning curves: finetune/metrics.csv)
    none = "none"  # results.json and predictions.jsonl only


@dataclass
class WandbSettings:
    # A run per cell: group = experiment_name, job_type = method, tags = [method, model, data].
    project: str = "kfr"
    entity: str | None = None  # team or user; null = your default entity
    # offline: written under the run directory, uploaded later with `wandb sync` (or
    # slurm/sync_wandb.sh) | online: streamed (needs `wandb login`) | disabled.
    # The WANDB_MODE environment variable, when set, wins (WANDB_MODE=disabled turns W&B off).
    mode: str = "offline"
    tags: list[str] = field(default_factory=list)  # added to [method, model, data]
    log_predictions: bool = True  # a wandb.Table of per-question predictions


@dataclass
class LoggerConfig:
    # Where a cell's config and metrics are logged besides results.json; never in the config
    # hash. Fine-tuning curves go to the same run (the tracker's training_loggers()).
    name: TrackerKind = TrackerKind.csv
    wandb: WandbSettings = field(default_factory=WandbSettings)


@dataclass
class KfrConfig:
    experiment_name: str = "default"
    seed: int = ranged(0, ge=0)
    skip_completed: bool = True  # skip when the run dir has results for the same config hash
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    qa: QaConfig = field(default_factory=QaConfig)
    raft: RaftConfig = field(default_factory=RaftConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # The metric a sweep's task returns to its sweeper (Optuna maximises it): a key of
    # results.json's metrics (acc, acc_norm, recall_at_k, ...). -1 when the cell failed.
    optimized_metric: str = "acc"


def register_schema() -> None:
    """Make ``kfr_schema`` and kfr's resolvers known to Hydra."""
    ConfigStore.instance().store(name="kfr_schema", node=KfrConfig)
    if not OmegaConf.has_resolver("kfr_user_cache"):
        OmegaConf.register_new_resolver("kfr_user_cache", lambda: user_cache_dir("kfr"))


register_schema()


# Where config errors say the problem is: the composed config (YAML files + overrides).
CONFIG_SOURCE = "config"


def validate_config(cfg: DictConfig) -> None:
    """Re-check ``cfg`` against the schema.

    Composition already rejects unknown keys and wrong types, except for keys a user adds with
    Hydra's ``+key=value`` syntax, which bypasses struct mode; those are caught here.
    """
    plain = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    try:
        OmegaConf.merge(OmegaConf.structured(KfrConfig), plain)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(err).splitlines()[0]
        raise UserError(f"not a valid setting ({message})", path=CONFIG_SOURCE, field=key) from None


def _optional_inner(hint: Any) -> Any:
    """``X`` for ``X | None`` (and for ``X``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _is_numeric(hint: Any) -> bool:
    """int, float, a list of them, each optionally nullable (bool is not a number here)."""
    hint = _optional_inner(hint)
    if typing.get_origin(hint) is list:
        (hint,) = typing.get_args(hint)
    return hint in (int, float)


def schema_keys(
    cls: type | None = None, prefix: str = ""
) -> list[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, dataclass field, type)`` of every leaf key of the schema (or of ``cls``),
    nested config blocks (``model.random_init``, ``augment.generator.model``) included."""
    cls = KfrConfig if cls is None else cls
    hints = typing.get_type_hints(cls)
    keys: list[tuple[str, dataclasses.Field, Any]] = []
    for f in dataclasses.fields(cls):
        inner = _optional_inner(hints[f.name])
        name = f"{prefix}{f.name}"
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            keys += schema_keys(inner, f"{name}.")
        else:
            keys.append((name, f, hints[f.name]))
    return keys


def numeric_keys() -> list[tuple[str, dataclasses.Field]]:
    """Every key whose value is a number (or a list of numbers): each must declare a Range."""
    return [(name, f) for name, f, hint in schema_keys() if _is_numeric(hint)]


def _range_problems(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(key, what is wrong)`` for every value of ``obj`` outside its key's Range."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _range_problems(value, f"{name}.")
            continue
        bounds = f.metadata.get(RANGE)
        if bounds is None or value is None:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if item not in bounds:
                yield name, f"must be {bounds.rule()}, got {item}"


def _int_like(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _blocks(obj: Any, cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, block)`` of every ``cls`` block nested in ``obj``."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        if isinstance(value, cls):
            yield name, value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _blocks(value, cls, f"{name}.")


def _relation_problems(cfg: KfrConfig) -> Iterator[tuple[str, str]]:
    """Ranges that depend on another key."""
    retriever = cfg.retriever
    if retriever.chunk_overlap >= retriever.chunk_tokens:
        yield (
            "retriever.chunk_overlap",
            f"must be below retriever.chunk_tokens ({retriever.chunk_tokens}), got "
            f"{retriever.chunk_overlap}",
        )
    for prefix, arch in _blocks(cfg, RandomInitConfig):  # model, augment.generator.model, ...
        if arch.hidden_size % arch.num_attention_heads:
            yield (
                f"{prefix}.hidden_size",
                f"must be a multiple of num_attention_heads ({arch.num_attention_heads}), got "
                f"{arch.hidden_size}",
            )
        if arch.num_attention_heads % arch.num_key_value_heads:
            yield (
                f"{prefix}.num_attention_heads",
                f"must be a multiple of num_key_value_heads ({arch.num_key_value_heads}), got "
                f"{arch.num_attention_heads}",
            )
    # trainer.devices is a count (-1: all), a list of device ids, or "auto".
    devices = cfg.trainer.devices
    if isinstance(devices, list | tuple | ListConfig):
        bad = [d for d in devices if _int_like(d) is None or _int_like(d) < 0]
        if not devices or bad:
            yield "trainer.devices", f"a list of device ids must hold ids >= 0, got {devices}"
    elif (count := _int_like(devices)) is not None and count != -1 and count < 1:
        yield "trainer.devices", f"must be >= 1 (or -1: all, or auto), got {devices}"


def check_ranges(cfg: KfrConfig) -> None:
    """Every numeric key within the Range it declares, and the ranges that depend on another
    key; the first value outside is a :class:`UserError` naming the key."""
    # Relations only once every value is in its own range (no division by a zero head count).
    for problems in (_range_problems, _relation_problems):
        for name, problem in problems(cfg):
            raise UserError(problem, path=CONFIG_SOURCE, field=name)


def typed_config(cfg: DictConfig | KfrConfig) -> KfrConfig:
    """The composed config as typed objects, made once at the edge (commands, tests), its values
    checked against their declared ranges (:func:`check_ranges`) before any work.

    Everything below the command layer reads these dataclasses, never a DictConfig: attribute
    access is checked by the type checker, and no code path re-resolves interpolations.
    """
    if isinstance(cfg, KfrConfig):
        check_ranges(cfg)
        return cfg
    validate_config(cfg)
    if "hydra" in cfg:  # a config composed with Hydra's own node (tests, --cfg all)
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise UserError(f"{str(err).splitlines()[0]}", path=CONFIG_SOURCE, field=key) from None
    assert isinstance(typed, KfrConfig)
    check_ranges(typed)
    return typed


def to_plain(obj: Any) -> Any:
    """A typed config (or any part of it) as plain JSON-able data, enums as their values.

    The same data ``OmegaConf.to_container(resolve=True, enum_to_str=True)`` gives for the
    DictConfig it came from, in the same key order (results.json's ``config``, hashes).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.name
    if isinstance(obj, DictConfig | ListConfig):
        return to_plain(OmegaConf.to_container(obj, resolve=True, enum_to_str=True))
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj

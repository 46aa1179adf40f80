"""What identifies a cell: one declaration, and everything derived from it.

A cell's results depend on some settings and not on others. Which ones is declared once, here:

- :data:`NOT_IDENTITY`: keys that say where things go or how progress is shown;
- ``method.reads`` (conf/method/*.yaml): the optional config groups (:data:`OPTIONAL_GROUPS`) a
  method uses; the groups it does not read cannot change its results;
- :data:`FINETUNE_MODE_READS` and :func:`_augment_ignored`: keys of a group read only under some
  of its own values (LoRA settings only by LoRA modes, the paraphrase generator only when
  paraphrases come from an LLM).

From it, and nowhere else, come: the config hash (:func:`config_hash`, results.json's
``config_hash``, what a resumed sweep compares), a sweep cell's folder name
(:func:`cell_dirname`, Hydra's ``hydra.sweep.subdir``), Hydra's override exclusions
(:func:`not_identity_overrides`, ``hydra.job.config.override_dirname.exclude_keys``), the
report's variant key (:func:`variant_key`) and the part of the fine-tuning cache key that comes
from the config (:func:`training_settings`). A new method is one ``reads`` declaration; a new
optional group is one entry in :data:`OPTIONAL_GROUPS`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kfr.core.errors import UserError
from kfr.core.schema import FinetuneMode, ParaphraseSource, QaSource, TeacherContext, to_plain

# Keys (dotted; a group name covers all its keys) that never change what a cell computes, and the
# config-group choices that only bundle other settings (experiment presets, searches).
NOT_IDENTITY = (
    "experiment",
    "hparams_search",
    "skip_completed",
    "optimized_metric",
    "logger",
    "paths",
    "method.reads",  # the declaration itself: fixed by method.name
    "method.recipe",  # likewise
    "eval.progress",
    "data.mmlu_dir",  # where MMLU is read from, not what it holds
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_min",
)
# Groups only some methods read (method.reads); every cell reads model, data, eval and seed.
OPTIONAL_GROUPS = ("retriever", "finetune", "trainer", "augment", "qa", "raft", "distill")
# What each fine-tuning mode reads of the finetune group beyond the settings every mode uses.
FINETUNE_MODE_READS: dict[FinetuneMode, tuple[str, ...]] = {
    FinetuneMode.full: (),
    FinetuneMode.lora: ("lora",),
    FinetuneMode.qlora: ("lora", "compute_dtype"),
}
_MODE_ONLY = ("lora", "compute_dtype")  # finetune keys some modes read and others not
# Model settings that say where or how a model runs, not which weights it holds.
_NOT_WEIGHTS = ("name", "device", "device_map", "max_length", "dtype")
# Bump when training code changes what a checkpoint holds, so old checkpoints are not reused.
TRAINING_VERSION = 1
_MAX_DIRNAME = 180  # a longer folder name keeps its start and ends with a hash of the whole


def method_reads(method: Mapping[str, Any]) -> tuple[str, ...]:
    """The optional groups a method reads (results written before ``reads`` existed: from its
    retrieve / finetune switches)."""
    reads = method.get("reads")
    if reads is None:
        reads = (["retriever"] if method.get("retrieve") else []) + (
            ["finetune", "trainer", "augment"] if method.get("finetune") else []
        )
    return tuple(str(group) for group in reads)


def check_method(method: Mapping[str, Any]) -> None:
    """A method must declare the groups its switches use: they are what identify its cells."""
    reads = method_reads(method)
    unknown = sorted(set(reads) - set(OPTIONAL_GROUPS))
    if unknown:
        raise UserError(
            f"unknown config group(s) {unknown}; a method reads some of {list(OPTIONAL_GROUPS)}",
            field="method.reads",
        )
    needed = (["retriever"] if method.get("retrieve") else []) + (
        ["finetune", "trainer"] if method.get("finetune") else []
    )
    recipe = str(method.get("recipe") or "documents")
    needed += {"qa": ["qa"], "raft": ["qa", "raft", "retriever"], "distill": ["qa", "distill"]}.get(
        recipe, []
    )
    missing = [group for group in needed if group not in reads]
    if missing:
        raise UserError(
            f"method '{method.get('name')}' uses groups it does not declare in method.reads: "
            f"{missing}",
            field="method.reads",
        )


def _augment_ignored(augment: Mapping[str, Any]) -> list[str]:
    if not augment.get("paraphrases"):
        # No paraphrases: where they would come from does not matter.
        return ["augment.source", "augment.file", "augment.generator", "augment.tokens", "augment="]
    source = str(augment.get("source", ""))
    ignored = []
    if source not in (ParaphraseSource.llm.value, ParaphraseSource.entigraph.value):
        ignored.append("augment.generator")
    if source != ParaphraseSource.file.value:
        ignored.append("augment.file")
    return ignored


def _qa_ignored(qa: Mapping[str, Any]) -> list[str]:
    source = str(qa.get("source", ""))
    ignored = []
    if source != QaSource.template.value:
        ignored.append("qa.per_fact")
    if source != QaSource.llm.value:
        ignored.append("qa.generator")
    if source != QaSource.file.value:
        ignored.append("qa.file")
    return ignored


def _method_ignored(config: Mapping[str, Any], reads: tuple[str, ...]) -> list[str]:
    """Keys a method reads only under some of its settings."""
    method = config.get("method") or {}
    ignored = []
    if not method.get("finetune"):
        # Forgetting is what fine-tuning costs: other cells score no control set.
        ignored += ["eval.control", "eval.control_confidence"]
    distill = config.get("distill") or {}
    if (
        "distill" in reads
        and not method.get("retrieve")
        and str(distill.get("teacher_context")) != TeacherContext.retrieved.value
    ):
        ignored += ["retriever", "retriever="]  # a gold-document teacher retrieves nothing
    return ignored


def ignored_keys(config: Mapping[str, Any]) -> set[str]:
    """Dotted keys of ``config`` (a plain dict) that cannot change this cell's results.

    ``"group="`` stands for the group choice ``group=option`` on a command line, ignored when
    none of what it could choose is read.
    """
    ignored = set(NOT_IDENTITY)
    reads = method_reads(config.get("method") or {})
    for group in OPTIONAL_GROUPS:
        if group not in reads:
            ignored.update({group, f"{group}="})
    ignored.update(_method_ignored(config, reads))
    if "augment" in reads:
        ignored.update(_augment_ignored(config.get("augment") or {}))
    if "qa" in reads:
        ignored.update(_qa_ignored(config.get("qa") or {}))
    if "finetune" in reads:
        mode = (config.get("finetune") or {}).get("mode", FinetuneMode.full.value)
        try:
            used = FINETUNE_MODE_READS[FinetuneMode(str(mode))]
        except ValueError:
            used = _MODE_ONLY  # a mode of another kfr version: keep everything
        ignored.update(f"finetune.{key}" for key in _MODE_ONLY if key not in used)
        if not (config.get("finetune") or {}).get("replay_share"):
            ignored.add("finetune.replay_share")  # 0 trains as before the key: same cells
    return ignored


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    node: Any = tree
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


def _plain(config: Any) -> dict[str, Any]:
    if isinstance(config, DictConfig) and "hydra" in config:
        # Never resolve Hydra's own node: hydra.sweep.subdir is what calls cell_dirname.
        config = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    plain = to_plain(config)
    if not isinstance(plain, dict):
        raise TypeError(f"expected a config mapping, got {type(config).__name__}")
    return {k: v for k, v in plain.items() if k != "hydra"}


def identity(config: Any) -> dict[str, Any]:
    """The settings that identify the cell ``config`` describes (typed, DictConfig or dict)."""
    tree = copy.deepcopy(_plain(config))
    for key in ignored_keys(tree):
        if not key.endswith("="):
            _drop(tree, key)
    return tree


def digest(obj: Any, length: int = 16) -> str:
    """A short, stable hash of JSON-able data (dict key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def config_hash(config: Any) -> str:
    """Hash of everything that can change a cell's results (results.json's ``config_hash``)."""
    return digest(identity(config))


# Keys that place a cell in the report's tables (row, column, seed) rather than make it a variant:
# the training seed and the knowledge base's seed (novel_facts) are both seeds one row aggregates.
_PLACED = ("experiment_name", "seed", "data.novel_facts.seed", "eval.shots", "retriever.k")


def variant_key(config: Mapping[str, Any]) -> str:
    """The report's variant: the config hash of everything but the cell's table position and
    its seeds (``seed``, ``data.novel_facts.seed``), with any paraphrase count > 0 alike (where
    the paraphrases come from still counts). The config hash and folder name keep both seeds."""
    tree = copy.deepcopy(_plain(config))
    for key in _PLACED:
        *parents, last = key.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            node[last] = None
    augment = tree.get("augment")
    if isinstance(augment, dict) and augment.get("paraphrases"):
        augment["paraphrases"] = -1
    return config_hash(tree)


def model_weights(model: Any) -> dict[str, Any]:
    """The model settings that pick its weights (what fine-tuning starts from)."""
    settings = _plain(model)
    for key in _NOT_WEIGHTS:
        settings.pop(key, None)
    return settings


def training_settings(config: Any) -> dict[str, Any]:
    """What of the config a fine-tuned checkpoint depends on: the finetune settings the mode
    reads, the training precision, the seed, and the settings of the training recipe's own
    groups (qa, raft, distill: those the method reads); the cache key adds the weights and the
    training data's content. Devices, strategy and micro-batch are left out: they change how the
    same effective batch is computed, not what is learnt."""
    tree = identity(config)
    settings = {
        "version": TRAINING_VERSION,
        "finetune": tree["finetune"],
        "precision": str(tree["trainer"]["precision"]),
        "seed": tree["seed"],
    }
    recipe = {group: tree[group] for group in ("qa", "raft", "distill") if group in tree}
    if recipe:  # the paper's recipes (ft, ft_rag) keep the keys of their existing checkpoints
        settings["method"] = tree["method"]["name"]
        settings["recipe"] = recipe
        # Supervised losses are per-token means over the whole optimizer step (no longer per
        # micro-batch, kfr.finetune.module): other weights, so other checkpoints.
        settings["loss"] = "step_token_mean"
    return settings


# ----------------------------------------------------------------------------- folder names


def _override_key(override: str) -> str:
    """The key (or group) an override sets: ``+retriever.k=3`` -> ``retriever.k``."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def _is_ignored(key: str, ignored: set[str]) -> bool:
    if "." not in key and "/" not in key and f"{key}=" in ignored:
        return True  # a group choice (retriever=e5_base) of a group the cell does not read
    parts = key.replace("/", ".").split(".")
    return any(".".join(parts[:i]) in ignored for i in range(1, len(parts) + 1))


def _short_paths(override: str) -> str:
    """``data.questions=/data/ce/q.jsonl`` -> ``data.questions=q.jsonl~1a2b3c``: one path
    component, readable, and still different for files of the same name in other folders."""
    key, sep, value = override.partition("=")
    if not sep or "/" not in value:
        return override
    short = hashlib.sha1(value.encode()).hexdigest()[:6]
    return f"{key}={Path(value.rstrip('/')).name or 'root'}~{short}"


def relevant_overrides(overrides: Iterable[str], config: Any) -> list[str]:
    """The overrides that can change this cell's results, sorted.

    A Cartesian grid makes cells that differ only in settings their method ignores
    (``method=base retriever.k=1`` and ``method=base retriever.k=2``): they get one folder, so
    the cell runs once and the others find its results.
    """
    ignored = ignored_keys(_plain(config))
    kept = [str(o) for o in overrides if not _is_ignored(_override_key(str(o)), ignored)]
    return sorted(_short_paths(o) for o in kept)


def cell_dirname(overrides: Iterable[str], config: Any) -> str:
    """A sweep cell's folder name: its relevant overrides joined by commas, one path component.

    ``""`` -> ``defaults``; names longer than 180 bytes keep their start plus a hash.
    """
    return safe_dirname(",".join(relevant_overrides(overrides, config)))


def safe_dirname(name: str) -> str:
    name = name.replace(os.sep, "∕").replace("\0", "")
    if not name:
        return "defaults"
    if name.startswith("."):  # never hidden, never "." or ".."
        name = "_" + name[1:]
    if len(name.encode()) > _MAX_DIRNAME:
        short = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = name.encode()[: _MAX_DIRNAME - 13].decode(errors="ignore") + "-" + short
    return name


def not_identity_overrides() -> list[str]:
    """Hydra's ``override_dirname.exclude_keys``: override keys that never identify a cell."""
    return [key for key in NOT_IDENTITY if key != "method.reads"]


def register_resolvers() -> None:
    """``${kfr_cell_dirname:${hydra.overrides.task}}`` and ``${kfr_not_identity:}`` for
    conf/hydra/default.yaml; the folder name reads the cell's whole config (``_root_``)."""
    if not OmegaConf.has_resolver("kfr_cell_dirname"):
        OmegaConf.register_new_resolver(
            "kfr_cell_dirname",
            lambda overrides, _root_: cell_dirname(overrides, _root_),
        )
    if not OmegaConf.has_resolver("kfr_not_identity"):
        OmegaConf.register_new_resolver("kfr_not_identity", not_identity_overrides)


register_resolvers()

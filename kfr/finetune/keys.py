"""Cache keys of fine-tuning artefacts: what was trained, on what, never where or how shown.

Two cells that would train the same weights get the same key, so a sweep's ``ft`` and ``ft_rag``
cells (and any repeat) train once: the key holds the base model's identity, the content of the
training texts (documents and the paraphrases actually used, not file paths), the fine-tuning
settings, the training precision and the seed. Devices, strategy and micro-batch size are left
out: they change how the same effective batch is computed, not what is learnt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kfr.config import FinetuneMode, ModelSource
from kfr.models.gguf_package import package_version

# Bump when training code changes what a checkpoint holds, so old checkpoints are not reused.
TRAINING_VERSION = 1
# Model settings that say where or how a model runs, not which weights it has.
_NOT_IDENTITY = ("name", "device", "device_map", "max_length")


def content_digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def model_identity(model_cfg: DictConfig, *, keep_dtype: bool = False) -> dict[str, Any]:
    """The settings that pick the weights (plus dtype when it changes the output)."""
    identity = OmegaConf.to_container(model_cfg, resolve=True, enum_to_str=True)
    assert isinstance(identity, dict)
    for key in _NOT_IDENTITY + (() if keep_dtype else ("dtype",)):
        identity.pop(key, None)
    if model_cfg.source == ModelSource.gguf_package:
        identity["package_version"] = package_version(model_cfg.package)
    return identity


def training_key(cfg: DictConfig, texts: Sequence[str]) -> str:
    finetune = OmegaConf.to_container(cfg.finetune, resolve=True, enum_to_str=True)
    assert isinstance(finetune, dict)
    if FinetuneMode(cfg.finetune.mode) == FinetuneMode.full:
        finetune.pop("lora", None)
    if FinetuneMode(cfg.finetune.mode) != FinetuneMode.qlora:
        finetune.pop("compute_dtype", None)
    return content_digest(
        {
            "version": TRAINING_VERSION,
            "model": model_identity(cfg.model),
            "texts": content_digest(list(texts)),
            "finetune": finetune,
            "precision": str(cfg.trainer.precision),
            "seed": cfg.seed,
        }
    )

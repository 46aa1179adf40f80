"""The three ways to fine-tune (full, LoRA, QLoRA): settings checks, model set-up, loading back.

Everything that can be checked without loading a model is checked first, in
:func:`check_finetune_settings`, so a combination that cannot work (QLoRA without bitsandbytes or
under FSDP, 16-bit training on the CPU, a batch that devices cannot split) stops the run before
any data or weights are read.

QLoRA quantises at load time (``BitsAndBytesConfig``), which transformers refuses for a GGUF
file: it reads the safetensors conversion the embedded model already has, and a random_init test
model is written once to the cache for the same reason.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from kfr.config import FinetuneMode, ModelSource
from kfr.errors import UserError
from kfr.models.gguf_package import converted_checkpoint
from kfr.models.loading import LoadedModel, _from_pretrained, load_model, resolve_device
from kfr.storage import build_directory_once

log = logging.getLogger(__name__)

_FULL_PRECISIONS = {"32", "32-true", "64", "64-true"}
_TRUE_DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16}
_MIXED_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _uses_gpu(accelerator: str) -> bool:
    if accelerator == "auto":
        return torch.cuda.is_available()
    return accelerator in {"gpu", "cuda"}


def world_size(trainer: DictConfig) -> int:
    """Processes that share the effective batch: devices per node x nodes."""
    devices = trainer.devices
    if isinstance(devices, ListConfig | list | tuple):
        count = len(devices)
    elif str(devices) in {"auto", "-1"}:
        count = max(1, torch.cuda.device_count()) if _uses_gpu(trainer.accelerator) else 1
    else:
        try:
            count = int(devices)
        except ValueError:
            raise UserError(
                f"expected a count, a list of ids or 'auto', got {devices!r}",
                field="trainer.devices",
            ) from None
    return count * trainer.num_nodes


def micro_batch_and_accumulation(cfg: DictConfig) -> tuple[int, int]:
    """Per-device micro-batch and accumulation steps that reach finetune.batch_size exactly."""
    batch, world = cfg.finetune.batch_size, world_size(cfg.trainer)
    if batch % world:
        raise UserError(
            f"{batch} blocks cannot be split evenly over {world} devices; use a multiple of "
            f"{world}",
            field="finetune.batch_size",
        )
    per_device = batch // world
    micro = min(cfg.trainer.micro_batch_size, per_device)
    if per_device % micro:
        raise UserError(
            f"finetune.batch_size={batch} over {world} device(s) is {per_device} blocks per "
            f"device, not a multiple of trainer.micro_batch_size={micro}; pick one that divides "
            "it",
            field="trainer.micro_batch_size",
        )
    return micro, per_device // micro


def _positive(value: float, field: str, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value}", field=field)


def check_finetune_settings(cfg: DictConfig) -> None:
    """Reject settings that cannot train, before anything is loaded."""
    ft, trainer = cfg.finetune, cfg.trainer
    mode = FinetuneMode(ft.mode)
    for name in ("epochs", "lr", "batch_size", "block_size"):
        _positive(ft[name], f"finetune.{name}")
    _positive(trainer.micro_batch_size, "trainer.micro_batch_size")
    _positive(ft.weight_decay, "finetune.weight_decay", allow_zero=True)
    _positive(trainer.checkpoint_every_min, "trainer.checkpoint_every_min", allow_zero=True)
    if not 0 <= ft.warmup_ratio < 1:
        raise UserError(f"must be in [0, 1), got {ft.warmup_ratio}", field="finetune.warmup_ratio")
    if mode != FinetuneMode.full:
        _positive(ft.lora.r, "finetune.lora.r")
        if not ft.lora.target_modules:
            raise UserError("name at least one layer", field="finetune.lora.target_modules")
    gpu = _uses_gpu(trainer.accelerator)
    if trainer.accelerator in {"gpu", "cuda"} and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={trainer.accelerator} but CUDA is not available; use trainer=cpu",
            field="trainer.accelerator",
        )
    if not gpu and str(trainer.precision) not in _FULL_PRECISIONS:
        raise UserError(
            f"{trainer.precision} training needs a GPU; on the CPU use trainer=cpu "
            "(trainer.precision=32-true)",
            field="trainer.precision",
        )
    if mode == FinetuneMode.qlora:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError(
                "finetune=qlora needs bitsandbytes: `pip install 'bitsandbytes>=0.45'` "
                "(CPU and CUDA), or use finetune=lora",
                field="finetune.mode",
            )
        if "fsdp" in str(trainer.strategy).lower():
            raise UserError(
                "QLoRA's 4-bit weights cannot be sharded by FSDP; use trainer=ddp or trainer=gpu",
                field="trainer.strategy",
            )
        if not gpu and ft.compute_dtype not in {"auto", "float32"}:
            raise UserError(
                f"compute dtype {ft.compute_dtype} on the CPU is slow or unsupported; use auto",
                field="finetune.compute_dtype",
            )
    micro_batch_and_accumulation(cfg)


# --------------------------------------------------------------------------- loading


def training_device(trainer: DictConfig) -> torch.device:
    """Where this process trains: its own GPU under DDP (LOCAL_RANK), else the first/the CPU."""
    if not _uses_gpu(trainer.accelerator):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def training_dtype(mode: FinetuneMode, precision: str) -> torch.dtype:
    """dtype the weights are loaded in for training.

    Trained weights stay float32 under mixed precision (Lightning autocasts the matmuls); frozen
    base weights of LoRA can be kept in the 16-bit compute dtype, halving their memory.
    """
    if precision in _TRUE_DTYPES:
        return _TRUE_DTYPES[precision]
    if mode != FinetuneMode.full and precision in _MIXED_DTYPES:
        return _MIXED_DTYPES[precision]
    return torch.float32


def compute_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if spec not in dtypes:
        raise UserError(
            f"use one of {[*dtypes, 'auto']}, got {spec}", field="finetune.compute_dtype"
        )
    return dtypes[spec]


def _random_init_checkpoint(model_cfg: DictConfig, cache_dir: Path) -> Path:
    """A random_init model written once to the cache, so it can be loaded quantised."""
    import hashlib
    import json

    spec = OmegaConf.to_container(model_cfg.random_init, resolve=True)
    digest = hashlib.sha256(
        json.dumps([spec, model_cfg.tokenizer], sort_keys=True).encode()
    ).hexdigest()[:12]

    def write(out_dir: Path) -> None:
        cpu_cfg = OmegaConf.merge(model_cfg, {"device": "cpu", "dtype": "float32"})
        lm = load_model(cpu_cfg, cache_dir)
        lm.model.save_pretrained(out_dir)
        lm.tokenizer.save_pretrained(out_dir)

    return build_directory_once(cache_dir / "models" / f"random_init-{digest}", write)


def base_checkpoint(model_cfg: DictConfig, cache_dir: str | Path) -> tuple[str, str | None]:
    """(directory or hub id, revision) the base weights can be read from with from_pretrained."""
    cache_dir = Path(cache_dir)
    source = ModelSource(model_cfg.source)
    if source == ModelSource.gguf_package:
        return str(converted_checkpoint(model_cfg.package, model_cfg.gguf_file, cache_dir)), None
    if source == ModelSource.random_init:
        return str(_random_init_checkpoint(model_cfg, cache_dir)), None
    if not model_cfg.path:
        raise UserError(
            "source=hf needs `path` (a hub id or a local directory)", field="model.path"
        )
    return model_cfg.path, model_cfg.revision


def load_quantized(
    model_cfg: DictConfig, cache_dir: str | Path, dtype: torch.dtype, device: torch.device
) -> LoadedModel:
    """The base model in 4-bit nf4 with double quantisation, computing in ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    path, revision = base_checkpoint(model_cfg, cache_dir)
    common = {"revision": revision, "trust_remote_code": model_cfg.trust_remote_code}
    tokenizer = _from_pretrained(AutoTokenizer, model_cfg.tokenizer or path, "model.path", **common)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = _from_pretrained(
        AutoModelForCausalLM,
        path,
        "model.path",
        quantization_config=quantization,
        dtype=dtype,
        device_map={"": str(device)},
        **common,
    )
    max_length = model_cfg.max_length or getattr(model.config, "max_position_embeddings", 2048)
    return LoadedModel(model, tokenizer, device, max_length, model_cfg.name, path)


def _lora_config(ft: DictConfig):
    from peft import LoraConfig

    targets = list(ft.lora.target_modules)
    return LoraConfig(
        r=ft.lora.r,
        lora_alpha=ft.lora.alpha,
        lora_dropout=ft.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _add_adapters(model, ft: DictConfig):
    from peft import get_peft_model

    try:
        return get_peft_model(model, _lora_config(ft))
    except ValueError as err:
        layers = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear)
            }
        )
        raise UserError(
            f"{str(err).splitlines()[0]}; this model's linear layers are {layers}",
            field="finetune.lora.target_modules",
        ) from None


def trainable_model(cfg: DictConfig, cache_dir: str | Path) -> tuple[Any, Any]:
    """(model ready for training, tokenizer) for cfg.finetune.mode."""
    ft = cfg.finetune
    mode = FinetuneMode(ft.mode)
    device = training_device(cfg.trainer)
    if mode == FinetuneMode.qlora:
        from peft import prepare_model_for_kbit_training

        lm = load_quantized(cfg.model, cache_dir, compute_dtype(ft.compute_dtype, device), device)
        model = prepare_model_for_kbit_training(
            lm.model,
            use_gradient_checkpointing=ft.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    else:
        dtype = training_dtype(mode, str(cfg.trainer.precision))
        # Loaded on the CPU: Lightning moves the module to its device (each rank its own GPU).
        overrides = {
            "dtype": str(dtype).removeprefix("torch."),
            "device": "cpu",
            "device_map": None,
        }
        lm = load_model(OmegaConf.merge(cfg.model, overrides), cache_dir)
        model = lm.model
        if ft.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    model.config.use_cache = False
    if mode != FinetuneMode.full:
        model = _add_adapters(model, ft)
    model.train()
    return model, lm.tokenizer


def load_finetuned(cfg: DictConfig, checkpoint: Path, cache_dir: str | Path) -> LoadedModel:
    """The fine-tuned model ready for scoring, from the files :func:`save_trained` wrote."""
    mode = FinetuneMode(cfg.finetune.mode)
    if mode == FinetuneMode.full:
        hf_cfg = OmegaConf.merge(
            cfg.model,
            {
                "source": "hf",
                "path": str(checkpoint / "model"),
                "revision": None,
                "random_init": None,
            },
        )
        lm = load_model(hf_cfg, cache_dir)
    else:
        from peft import PeftModel

        if mode == FinetuneMode.qlora:
            # Scored on the 4-bit weights it was trained against: merging into full-precision
            # weights would score a model that was never trained.
            device = resolve_device(cfg.model.device)
            lm = load_quantized(
                cfg.model, cache_dir, compute_dtype(cfg.finetune.compute_dtype, device), device
            )
            lm.model = PeftModel.from_pretrained(lm.model, str(checkpoint / "adapter"))
        else:
            lm = load_model(cfg.model, cache_dir)
            # Merged: scoring then runs at the base model's speed, with no adapter layers.
            lm.model = PeftModel.from_pretrained(
                lm.model, str(checkpoint / "adapter")
            ).merge_and_unload()
        lm.model.eval()
    lm.checkpoint = str(checkpoint)
    return lm


def save_trained(model, tokenizer, mode: FinetuneMode, out_dir: Path, state_dict=None) -> None:
    """Adapter only for LoRA/QLoRA, a full Hugging Face checkpoint for full fine-tuning.

    ``state_dict`` (gathered from all ranks under FSDP) replaces the model's own tensors.
    """
    if mode == FinetuneMode.full:
        model.save_pretrained(out_dir / "model", state_dict=state_dict)
        tokenizer.save_pretrained(out_dir / "model")
    else:
        model.save_pretrained(out_dir / "adapter", state_dict=state_dict)

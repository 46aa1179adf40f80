"""The ways to fine-tune, one strategy object each: full, LoRA, QLoRA.

A strategy checks the settings only it needs, makes the model to train, saves what it trained
and loads the result back for scoring; the training loop (:mod:`kfr.finetune.train`) and the
checkpoint cache (:mod:`kfr.finetune.checkpoints`) never ask which mode they run. Models are
loaded only through :func:`kfr.models.loading.load_model`, so dtype, device, padding and the
context length follow one rule. What of the ``finetune`` group each mode reads (and so what
identifies its checkpoints) is declared in :data:`kfr.core.identity.FINETUNE_MODE_READS`.

QLoRA quantises at load time (``BitsAndBytesConfig``), which transformers refuses for a GGUF
file: the loader reads the safetensors conversion the embedded model already has, and a
random_init model is quantised in memory (:mod:`kfr.models.loading`).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from kfr.core.devices import resolve_device
from kfr.core.errors import UserError
from kfr.core.identity import FINETUNE_MODE_READS
from kfr.core.schema import FinetuneConfig, FinetuneMode, KfrConfig
from kfr.finetune.settings import (
    check_common_settings,
    check_positive,
    training_device,
    training_dtype,
    uses_gpu,
)
from kfr.models.lm import LanguageModel
from kfr.models.loading import DTYPES, load_model

log = logging.getLogger(__name__)


def compute_dtype(spec: str, device: torch.device) -> torch.dtype:
    """QLoRA's compute dtype: ``auto`` = bfloat16 on a GPU, float32 on the CPU."""
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec not in DTYPES:
        raise UserError(
            f"use one of {[*DTYPES, 'auto']}, got {spec}", field="finetune.compute_dtype"
        )
    return DTYPES[spec]


def bitsandbytes_cuda_problem() -> str | None:
    """Why bitsandbytes cannot run 4-bit layers on this GPU, or None. bitsandbytes imports
    without its CUDA library (a CPU-only build, or none for this CUDA version) and fails only
    at the first 4-bit matmul, deep inside training: ask its loader up front."""
    from bitsandbytes import cextension

    lib = getattr(cextension, "lib", None)
    if getattr(lib, "compiled_with_cuda", False):
        return None
    # vars(): the library object answers any other attribute with a stub function.
    message = str(vars(lib).get("error_msg", "") if lib is not None else "").strip().splitlines()
    return message[0] if message else "the native library it loaded is not a CUDA build"


class FullFinetune:
    """Every weight trained; saved as a full Hugging Face checkpoint (``model/``)."""

    mode: ClassVar[FinetuneMode] = FinetuneMode.full
    saved: ClassVar[str] = "model"  # the subdirectory of the checkpoint that holds the result
    frozen_base: ClassVar[bool] = False  # base weights not trained (adapters on top)

    @property
    def reads(self) -> tuple[str, ...]:
        return FINETUNE_MODE_READS[self.mode]

    def check(self, cfg: KfrConfig) -> None:
        """Settings only this mode needs (the common ones: kfr.finetune.settings)."""

    def _base(self, cfg: KfrConfig, cache_dir: str | Path) -> LanguageModel:
        # Loaded on the CPU: Lightning moves the module to its device (each rank its own GPU).
        dtype = training_dtype(str(cfg.trainer.precision), frozen_base=self.frozen_base)
        # Made on the device it trains on (Lightning's move is then a no-op): a random_init
        # model is created there, not initialised on the CPU and copied. FSDP shards from the CPU.
        fsdp = "fsdp" in str(cfg.trainer.strategy).lower()
        device = "cpu" if fsdp else str(training_device(cfg.trainer))
        model_cfg = replace(
            cfg.model, dtype=str(dtype).removeprefix("torch."), device=device, device_map=None
        )
        lm = load_model(model_cfg, cache_dir)
        if cfg.finetune.gradient_checkpointing:
            lm.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        return lm

    def trainable_model(self, cfg: KfrConfig, cache_dir: str | Path) -> tuple[Any, Any]:
        """(model in training mode, tokenizer)."""
        lm = self._base(cfg, cache_dir)
        return self._ready(lm.model, cfg.finetune), lm.tokenizer

    def _ready(self, model: Any, ft: FinetuneConfig) -> Any:
        model.config.use_cache = False
        model.train()
        return model

    def save(self, model: Any, tokenizer: Any, out_dir: Path, state_dict: Any = None) -> None:
        """``state_dict`` (gathered from all ranks under FSDP) replaces the model's own."""
        model.save_pretrained(out_dir / self.saved, state_dict=state_dict)
        tokenizer.save_pretrained(out_dir / self.saved)

    def load_for_scoring(
        self, cfg: KfrConfig, checkpoint: Path, cache_dir: str | Path
    ) -> LanguageModel:
        lm = load_model(cfg.model, cache_dir, weights=checkpoint / self.saved)
        lm.checkpoint = str(checkpoint)
        return lm


class LoraFinetune(FullFinetune):
    """Low-rank adapters on frozen weights (peft); saved adapter-only (``adapter/``)."""

    mode: ClassVar[FinetuneMode] = FinetuneMode.lora
    saved: ClassVar[str] = "adapter"
    frozen_base: ClassVar[bool] = True

    def check(self, cfg: KfrConfig) -> None:
        check_positive(cfg.finetune.lora.r, "finetune.lora.r")
        if not cfg.finetune.lora.target_modules:
            raise UserError("name at least one layer", field="finetune.lora.target_modules")

    def _ready(self, model: Any, ft: FinetuneConfig) -> Any:
        model.config.use_cache = False
        model = _add_adapters(model, ft)
        model.train()
        return model

    def save(self, model: Any, tokenizer: Any, out_dir: Path, state_dict: Any = None) -> None:
        model.save_pretrained(out_dir / self.saved, state_dict=state_dict)

    def load_for_scoring(
        self, cfg: KfrConfig, checkpoint: Path, cache_dir: str | Path
    ) -> LanguageModel:
        from peft import PeftModel

        lm = load_model(cfg.model, cache_dir)
        # Merged: scoring then runs at the base model's speed, with no adapter layers.
        lm.model = PeftModel.from_pretrained(lm.model, str(checkpoint / self.saved))
        lm.model = lm.model.merge_and_unload()
        lm.model.eval()
        lm.checkpoint = str(checkpoint)
        return lm


class QLoraFinetune(LoraFinetune):
    """LoRA on 4-bit nf4 weights with double quantisation (bitsandbytes)."""

    mode: ClassVar[FinetuneMode] = FinetuneMode.qlora

    def check(self, cfg: KfrConfig) -> None:
        super().check(cfg)
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError(
                "finetune=qlora needs bitsandbytes: `pip install 'bitsandbytes>=0.45'` "
                "(CPU and CUDA), or use finetune=lora",
                field="finetune.mode",
            )
        if "fsdp" in str(cfg.trainer.strategy).lower():
            raise UserError(
                "QLoRA's 4-bit weights cannot be sharded by FSDP; use trainer=ddp or trainer=gpu",
                field="trainer.strategy",
            )
        if uses_gpu(cfg.trainer.accelerator):
            problem = bitsandbytes_cuda_problem()
            if problem:
                raise UserError(
                    f"finetune=qlora on a GPU, but bitsandbytes has no CUDA kernels here "
                    f"({problem}); install a bitsandbytes build for this CUDA, or use "
                    "finetune=lora",
                    field="finetune.mode",
                )
        if not uses_gpu(cfg.trainer.accelerator) and cfg.finetune.compute_dtype not in {
            "auto",
            "float32",
        }:
            raise UserError(
                f"compute dtype {cfg.finetune.compute_dtype} on the CPU is slow or unsupported; "
                "use auto",
                field="finetune.compute_dtype",
            )

    def _quantized(self, cfg: KfrConfig, cache_dir: str | Path, device: Any) -> LanguageModel:
        dtype = compute_dtype(cfg.finetune.compute_dtype, device)
        return load_model(replace(cfg.model, device=str(device)), cache_dir, quantize_4bit=dtype)

    def trainable_model(self, cfg: KfrConfig, cache_dir: str | Path) -> tuple[Any, Any]:
        from peft import prepare_model_for_kbit_training

        lm = self._quantized(cfg, cache_dir, training_device(cfg.trainer))
        model = prepare_model_for_kbit_training(
            lm.model,
            use_gradient_checkpointing=cfg.finetune.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return self._ready(model, cfg.finetune), lm.tokenizer

    def load_for_scoring(
        self, cfg: KfrConfig, checkpoint: Path, cache_dir: str | Path
    ) -> LanguageModel:
        from peft import PeftModel

        # Scored on the 4-bit weights it was trained against: merging into full-precision
        # weights would score a model that was never trained.
        lm = self._quantized(cfg, cache_dir, resolve_device(cfg.model.device))
        lm.model = PeftModel.from_pretrained(lm.model, str(checkpoint / self.saved))
        lm.model.eval()
        lm.checkpoint = str(checkpoint)
        return lm


STRATEGIES: dict[FinetuneMode, FullFinetune] = {
    s.mode: s for s in (FullFinetune(), LoraFinetune(), QLoraFinetune())
}


def strategy(mode: FinetuneMode | str) -> FullFinetune:
    """The strategy object of a ``finetune.mode``."""
    return STRATEGIES[FinetuneMode(mode)]


def check_finetune_settings(cfg: KfrConfig) -> None:
    """Reject settings that cannot train, before anything is loaded."""
    check_common_settings(cfg)
    strategy(cfg.finetune.mode).check(cfg)


def _lora_config(ft: FinetuneConfig) -> Any:
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


def _add_adapters(model: Any, ft: FinetuneConfig) -> Any:
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


__all__ = ["STRATEGIES", "FullFinetune", "LoraFinetune", "QLoraFinetune", "strategy"]

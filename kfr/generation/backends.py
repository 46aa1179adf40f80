"""Command-line choice of a :class:`~kfr.generation.backend.TextGenerator`, for every command
that generates text from a knowledge base (questions, paraphrases): one set of flags, one
factory, so the commands do not each grow their own.

    --backend local   --model smollm2_135m          a kfr model config (conf/model/<name>.yaml)
    --backend local   --model-path /models/Orca-2-7b   any HF directory or hub id
    --backend openai  --model gpt-4o --base-url https://api.openai.com/v1 [--api-key-env VAR]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kfr.core.errors import UserError
from kfr.core.http import HttpClient, HttpPolicy
from kfr.core.paths import CONFIG_DIR
from kfr.core.schema import ModelConfig, ModelSource
from kfr.generation.backend import SamplingSettings, TextGenerator, TransformersGenerator
from kfr.generation.openai_compat import DEFAULT_BASE_URL, DEFAULT_KEY_ENV, OpenAICompatGenerator

LOCAL_DEFAULT_MODEL = "smollm2_135m"


def add_backend_arguments(
    parser: argparse.ArgumentParser, *, max_new_tokens: int = 512, temperature: float = 0.7
) -> None:
    group = parser.add_argument_group("text generation backend")
    group.add_argument("--backend", choices=("local", "openai"), default="local")
    group.add_argument(
        "--model",
        help=f"local: a kfr model config name (default {LOCAL_DEFAULT_MODEL}); "
        "openai: the endpoint's model name (required)",
    )
    group.add_argument("--model-path", help="local: an HF model directory or hub id instead")
    group.add_argument("--device", default=None, help="local: auto | cpu | cuda | cuda:N")
    group.add_argument("--base-url", default=None, help="openai: endpoint up to /v1")
    group.add_argument("--api-key-env", default=None, help="openai: env var holding the key")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    group.add_argument("--top-p", type=float, default=0.95)
    group.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="local: prompts per generate() call; openai: concurrent requests",
    )
    group.add_argument("--retries", type=int, default=5, help="openai: HTTP retries per request")
    group.add_argument("--backoff", type=float, default=1.0, help="openai: first retry wait (s)")
    group.add_argument(
        "--rate", type=float, default=None, help="openai: most requests per second (default none)"
    )


def model_config_by_name(name: str) -> ModelConfig:
    """``conf/model/<name>.yaml`` merged onto the typed schema."""
    models = Path(CONFIG_DIR) / "model"
    path = models / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in models.glob("*.yaml")))
        raise UserError(f"unknown model config '{name}' (known: {known})", field="--model")
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)


def _settings(args: argparse.Namespace) -> SamplingSettings:
    settings = SamplingSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
    )
    return settings.checked(lambda attr: "--" + attr.replace("_", "-"))


def generator_from_args(
    args: argparse.Namespace, *, cache_dir: str | Path, reply_cache: str | Path | None = None
) -> tuple[TextGenerator, dict[str, Any]]:
    """The generator the flags describe, and what a dataset card records about it."""
    settings = _settings(args)
    sampling = settings.to_json()
    if args.backend == "openai":
        if not args.model:
            raise UserError("--backend openai needs --model (the endpoint's model name)")
        key_env = args.api_key_env or DEFAULT_KEY_ENV
        base_url = args.base_url or DEFAULT_BASE_URL
        if base_url == DEFAULT_BASE_URL and not os.environ.get(key_env):
            raise UserError(f"set {key_env} to your API key (or --api-key-env to another variable)")
        policy = HttpPolicy(
            retries=args.retries,
            backoff_s=args.backoff,
            min_interval_s=1.0 / args.rate if args.rate else 0.0,
            timeout_s=300.0,
        )
        generator = OpenAICompatGenerator(
            args.model,
            settings,
            base_url=base_url,
            api_key_env=key_env,
            http=HttpClient(policy),
            cache_dir=reply_cache,
        )
        return generator, generator.describe() | {"sampling": sampling}

    cfg = model_config_by_name(args.model or LOCAL_DEFAULT_MODEL)
    if args.model_path:
        name = Path(args.model_path).name or args.model_path
        cfg = replace(cfg, source=ModelSource.hf, path=args.model_path, name=name)
    if args.device:
        cfg = replace(cfg, device=args.device)
    generator = TransformersGenerator.from_config(cfg, cache_dir, settings)
    description = {
        "backend": "transformers",
        "model": generator.lm.name,
        "checkpoint": generator.lm.checkpoint,
        "device": str(generator.lm.device),
        "sampling": sampling,
    }
    return generator, description


__all__ = ["add_backend_arguments", "generator_from_args", "model_config_by_name"]

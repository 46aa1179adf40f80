"""Batched sampling from a causal LM through transformers, behind a small interface.

Prompts are user messages: the model's chat template (when it has one) wraps each, so an
instruction-tuned model sees the format it was trained on. ``prefill`` starts the model's answer
for it (e.g. ``{"paraphrases": ["``): small models then stay in the asked-for format far more
often; answers are returned with the prefill in front. Sampling is seeded per batch inside a
forked RNG, so the same prompts, seed and batch size give the same texts and the caller's random
state is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch

from kfr.core.errors import UserError
from kfr.core.schema import GeneratorConfig
from kfr.models import LanguageModel, load_model

log = logging.getLogger(__name__)


class TextGenerator(Protocol):
    """Answers chat prompts with text; the same prompts and seed give the same answers.

    ``prefill`` is optional: a backend that cannot start the answer itself may leave the
    parameter out, and :func:`~kfr.generation.generate_json` passes it only when it is set.
    """

    name: str

    def generate(self, prompts: Sequence[str], *, seed: int, prefill: str = "") -> list[str]: ...


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 512
    temperature: float = 0.8  # 0 = greedy decoding
    top_p: float = 0.95
    batch_size: int = 8  # prompts per generate() call; part of what makes output repeatable

    def checked(self, field_name: Callable[[str], str]) -> SamplingSettings:
        """These settings, once values no generator takes are rejected; ``field_name(attr)``
        is how the user spelled the setting (a flag, a config key) in the error."""
        problems = {
            "max_new_tokens": (self.max_new_tokens < 1, "must be at least 1"),
            "temperature": (self.temperature < 0, "must be at least 0"),
            "top_p": (not 0 < self.top_p <= 1, "must be in (0, 1]"),
            "batch_size": (self.batch_size < 1, "must be at least 1"),
        }
        for attr, (bad, rule) in problems.items():
            if bad:
                raise UserError(f"{rule}, got {getattr(self, attr)}", field=field_name(attr))
        return self

    def to_json(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_config(cls, gen: GeneratorConfig, prefix: str) -> SamplingSettings:
        """The sampling settings of a generator config, checked; ``prefix`` is where the config
        sits (``augment.generator``, ``qa.generator``), for error messages."""
        settings = cls(
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            top_p=gen.top_p,
            batch_size=gen.batch_size,
        )
        return settings.checked(lambda attr: f"{prefix}.{attr}")


class TransformersGenerator:
    def __init__(self, lm: LanguageModel, settings: SamplingSettings) -> None:
        self.lm = lm
        self.name = lm.name
        self.settings = settings
        # Left padding: every prompt of a batch must end where generation starts.
        lm.tokenizer.padding_side = "left"

    @classmethod
    def from_config(cls, model_cfg, cache_dir: str | Path, settings: SamplingSettings):
        return cls(load_model(model_cfg, cache_dir), settings)

    def _format(self, prompt: str, prefill: str) -> str:
        tokenizer = self.lm.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return prompt + prefill
        return (
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            + prefill
        )

    @torch.inference_mode()
    def _generate_batch(self, prompts: Sequence[str], prefill: str) -> list[str]:
        tokenizer, model, s = self.lm.tokenizer, self.lm.model, self.settings
        # The chat template already holds the special tokens the model expects.
        inputs = tokenizer(
            [self._format(p, prefill) for p in prompts],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self.lm.device)
        sampling = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p}
        output = model.generate(
            **inputs,
            max_new_tokens=s.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **(sampling if s.temperature > 0 else {"do_sample": False}),
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [
            prefill + text for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ]

    def generate(self, prompts: Sequence[str], *, seed: int, prefill: str = "") -> list[str]:
        size = self.settings.batch_size
        cuda = [self.lm.device.index or 0] if self.lm.device.type == "cuda" else []
        texts: list[str] = []
        for start in range(0, len(prompts), size):
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed * 1_000_003 + start)
                texts += self._generate_batch(prompts[start : start + size], prefill)
        return texts

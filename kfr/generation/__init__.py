"""Text generation with an instruction-tuned model: paraphrases now, questions later.

:class:`TextGenerator` is the interface (chat prompts in, texts out, repeatable for a seed);
:class:`TransformersGenerator` implements it with any causal LM kfr can load; :func:`generate_json`
asks for JSON answers, validates them and retries the ones that fail.
"""

from kfr.generation.backend import SamplingSettings, TextGenerator, TransformersGenerator
from kfr.generation.structured import JsonStats, extract_json, generate_json

__all__ = [
    "JsonStats",
    "SamplingSettings",
    "TextGenerator",
    "TransformersGenerator",
    "extract_json",
    "generate_json",
]

"""Causal language models: one loader for every source and fine-tuning mode, one model object.

- :mod:`kfr.models.loading`: config -> :class:`LanguageModel` (dtype, device, padding,
  max length, 4-bit loading, fine-tuned weights);
- :mod:`kfr.models.lm`: :class:`LanguageModel`, which answers ``loglikelihood(requests)``;
- :mod:`kfr.models.gguf_package`: the packaged GGUF converted once to safetensors.
"""

from kfr.models.lm import LanguageModel
from kfr.models.loading import load_model

__all__ = ["LanguageModel", "load_model"]

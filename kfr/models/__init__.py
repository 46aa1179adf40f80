"""Loading causal language models and their tokenizers from any supported source."""

from kfr.models.loading import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]

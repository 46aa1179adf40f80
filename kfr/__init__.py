"""kfr: knowledge injection by fine-tuning, retrieval or both, as a config-driven study."""

__version__ = "0.1.0"

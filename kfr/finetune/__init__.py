"""Unsupervised fine-tuning on the knowledge base (methods ft and ft_rag), with Lightning.

- :mod:`kfr.finetune.data`: documents (and paraphrases) packed into BOS/EOS-delimited blocks;
- :mod:`kfr.finetune.module`: the LightningModule (AdamW, warmup + decay, logged loss and rate);
- :mod:`kfr.finetune.modes`: full / LoRA / QLoRA set-up, settings checks, loading for scoring;
- :mod:`kfr.finetune.paraphrases`: augmentation sources (template, LLM, file);
- :mod:`kfr.finetune.keys`, :mod:`kfr.finetune.checkpoints`: train once per key, reuse;
- :mod:`kfr.finetune.train`: one Trainer run.
"""

from kfr.finetune.checkpoints import FinetunedModel, copy_training_logs, finetuned_model
from kfr.finetune.modes import check_finetune_settings

__all__ = ["FinetunedModel", "check_finetune_settings", "copy_training_logs", "finetuned_model"]

"""Fine-tuning on the knowledge base (methods ft, ft_rag, qa_ft, distill, raft), with Lightning.

- :mod:`kfr.finetune.recipes`: what a method trains on (``method.recipe``): documents and their
  augmentation, QA pairs, RAFT prompts, distillation targets;
- :mod:`kfr.finetune.data`: documents (and augmentation texts) packed into BOS/EOS blocks;
- :mod:`kfr.finetune.examples`: supervised prompt/answer examples, loss on the answer tokens;
- :mod:`kfr.finetune.paraphrases`, :mod:`kfr.finetune.entigraph`, :mod:`kfr.finetune.replay`:
  augmentation sources (template, LLM, file, entity graph), the token budget, replay text;
- :mod:`kfr.finetune.qa_pairs`: training questions (never the evaluation's) and their overlap
  check; :mod:`kfr.finetune.distill`: the teacher's cached answer distributions;
- :mod:`kfr.finetune.module`: the LightningModule (AdamW, warmup + decay, the three losses);
- :mod:`kfr.finetune.modes`, :mod:`kfr.finetune.settings`: full / LoRA / QLoRA strategies and
  the settings checked before anything loads;
- :mod:`kfr.finetune.keys`, :mod:`kfr.finetune.checkpoints`: train once per key, reuse;
- :mod:`kfr.finetune.train`: one Trainer run.
"""

from kfr.finetune.checkpoints import FinetunedModel, copy_training_logs, finetuned_model
from kfr.finetune.modes import check_finetune_settings

__all__ = ["FinetunedModel", "check_finetune_settings", "copy_training_logs", "finetuned_model"]

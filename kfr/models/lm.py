"""The language model a cell scores with, like lm-eval's ``LM``: weights, tokenizer, device and
context length together, answering log-likelihood requests.

Only :func:`kfr.models.loading.load_model` makes one, so whatever the source or fine-tuning mode,
the same rules set its dtype, padding, placement and ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kfr.evaluation.loglikelihood import ScoringStats, score_requests
from kfr.evaluation.prompts import ChoiceRequest


@dataclass
class LanguageModel:
    model: Any  # transformers.PreTrainedModel (possibly wrapped by peft)
    tokenizer: Any  # transformers.PreTrainedTokenizerBase, with a pad token
    device: torch.device
    max_length: int  # the context window every request is fitted to
    name: str
    checkpoint: str  # where the weights came from, recorded in results

    def loglikelihood(
        self, requests: Sequence[ChoiceRequest], *, batch_size: int = 8, progress: bool = False
    ) -> tuple[list[list[float]], ScoringStats]:
        """Summed log-probability of every continuation of every request, in request order
        (lm-eval's token boundaries and left truncation; batch size never changes a number)."""
        return score_requests(
            self.model,
            self.tokenizer,
            requests,
            max_length=self.max_length,
            batch_size=batch_size,
            device=self.device,
            progress=progress,
        )

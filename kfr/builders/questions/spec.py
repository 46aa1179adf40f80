"""The settings of a question-generation run (recorded in the card's ``settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from kfr.builders.questions.prompts import PROMPT_STYLES
from kfr.core.errors import UserError


@dataclass(frozen=True)
class QuestionSpec:
    per_chunk: int = 4  # questions asked of the LLM per chunk (the paper: 4)
    keep: int = 2  # most specific kept per chunk (the paper: 2)
    min_specificity: float = 0.0
    min_support: float = 0.4  # share of the question's word weight found in its own chunk
    shuffle: bool = True  # reorder options, seeded by question id
    seed: int = 0
    json_retries: int = 2  # asks again when a reply holds no usable question
    max_chunk_chars: int = 4000  # longer chunks are cut (the LLM sees, and is checked on, the cut)
    min_chunk_chars: int = 100  # shorter chunks are skipped: too little to ask about
    chunks_per_block: int = 16  # progress and seeds advance per block of chunks
    subject: str | None = None  # written into every question (per-subject accuracy)
    prompt_style: str = "detailed"  # detailed: PROMPT (k per request) | simple: SIMPLE_PROMPT

    def __post_init__(self) -> None:
        if self.prompt_style not in PROMPT_STYLES:
            raise UserError(
                f"must be one of {', '.join(PROMPT_STYLES)}, got '{self.prompt_style}'",
                field="prompt_style",
            )
        if self.per_chunk < 1:
            raise UserError(f"must be at least 1, got {self.per_chunk}", field="per_chunk")
        if not 1 <= self.keep <= self.per_chunk:
            raise UserError(
                f"must be between 1 and per_chunk ({self.per_chunk}), got {self.keep}",
                field="keep",
            )
        if self.json_retries < 0:
            raise UserError(f"must be at least 0, got {self.json_retries}", field="json_retries")
        if self.chunks_per_block < 1:
            raise UserError(f"must be at least 1, got {self.chunks_per_block}", field="block")


__all__ = ["QuestionSpec"]

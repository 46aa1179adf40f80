"""Context distillation's teacher: the base model reading the source document (or retrieved
chunks), its answer distributions computed once and cached.

For every training example the teacher reads ``teacher_context`` + the answer and keeps, at each
answer token, its ``distill.top_k`` most likely next tokens with their log-probabilities. The
student (:class:`~kfr.finetune.module.CausalLMModule`) reads ``context`` (no document) + the
same answer tokens and is trained towards those distributions. The answer is tokenized after
both prompts, which end alike ("Answer:"), so both see the same target tokens; an example where
they differ is an error, never a silent misalignment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kfr.core.errors import UserError
from kfr.core.identity import digest
from kfr.core.storage import build_directory_once
from kfr.evaluation.loglikelihood import split_tokens
from kfr.finetune.examples import TrainingExample
from kfr.models.lm import LanguageModel

log = logging.getLogger(__name__)

TARGETS_FILE = "teacher.pt"
TEACHER_VERSION = 1  # bump when what the file holds changes


def _pairs(tokenizer, example: TrainingExample, max_length: int) -> tuple[list[int], int]:
    """The teacher's input ids and where the answer starts in them."""
    if example.teacher_context is None or example.document is not None:
        raise UserError("distillation trains on question-answer examples only", field="qa")
    teacher_ctx, target = split_tokens(tokenizer, example.teacher_context, example.target)
    _, student_target = split_tokens(tokenizer, example.context, example.target)
    if target != student_target:
        raise UserError(
            f"the answer {example.target!r} tokenizes differently after the teacher's and the "
            "student's prompts; distillation needs them equal",
            field="distill.teacher_context",
        )
    if len(teacher_ctx) + len(target) > max_length:
        # Cutting the document would train the student towards a teacher that never read it.
        raise UserError(
            f"the teacher's prompt is {len(teacher_ctx) + len(target)} tokens, longer than the "
            f"model's context ({max_length}); use distill.teacher_context=retrieved with a "
            "smaller retriever.k, or shorter documents",
            field="distill.teacher_context",
        )
    return teacher_ctx + target, len(teacher_ctx)


@torch.inference_mode()
def compute_teacher_targets(
    lm: LanguageModel,
    examples: Sequence[TrainingExample],
    top_k: int,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """Per example: ``teacher_ids`` / ``teacher_logprobs``, ``[answer tokens, top_k]``."""
    if top_k < 1:
        raise UserError(f"must be at least 1, got {top_k}", field="distill.top_k")
    tokenizer, model = lm.tokenizer, lm.model
    encoded = [_pairs(tokenizer, example, lm.max_length) for example in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets: list[dict[str, torch.Tensor]] = []
    starts = range(0, len(encoded), batch_size)
    for start in tqdm(starts, desc="teacher", unit="batch", disable=not progress):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (seq, _) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
        for row, (seq, answer_start) in enumerate(batch):
            # Position p predicts token p + 1: the answer's tokens are predicted from
            # answer_start - 1 to len(seq) - 2.
            rows = logits[row, answer_start - 1 : len(seq) - 1].float().log_softmax(-1)
            values, indices = rows.topk(min(top_k, rows.shape[-1]), dim=-1)
            targets.append({"teacher_ids": indices.cpu(), "teacher_logprobs": values.cpu()})
    return targets


def teacher_targets(
    lm: LanguageModel,
    teacher_identity: dict,
    examples: Sequence[TrainingExample],
    top_k: int,
    cache_dir: str | Path,
    *,
    progress: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """:func:`compute_teacher_targets`, computed once per (teacher, examples, top_k) and cached
    under ``<cache>/distill/``; every cell of a sweep that needs them reads the file."""
    key = digest(
        {
            "version": TEACHER_VERSION,
            "teacher": teacher_identity,
            "top_k": top_k,
            "examples": [example.key() for example in examples],
        }
    )

    def build(out_dir: Path) -> None:
        log.info("Teacher distributions for %d examples (once)", len(examples))
        targets = compute_teacher_targets(lm, examples, top_k, progress=progress)
        torch.save(targets, out_dir / TARGETS_FILE)

    target = build_directory_once(Path(cache_dir) / "distill" / f"{lm.name}-{key}", build)
    return torch.load(target / TARGETS_FILE, weights_only=True)

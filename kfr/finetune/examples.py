"""Supervised training examples (qa_ft, raft, distill): a prompt and the answer trained on.

Each example is scored the way the evaluation asks: its prompt is built by
:func:`kfr.evaluation.prompts.build_context` (``"Question: ...\\nAnswer:"``, retrieved passages
before it for RAFT) and its answer is the continuation ``" {answer}"``, split into tokens at
lm-eval's boundary (:func:`kfr.evaluation.loglikelihood.split_tokens`), so the model learns
exactly the token sequence it is later scored on. The loss covers the answer tokens only.
Documents mixed in (``qa.documents_ratio``) are trained on whole, BOS/EOS around them.

:class:`ExampleData` batches them (right-padded; padding never trained), draws a new order every
epoch, gives each rank its share and skips the batches a resumed run had done, as the packed
documents do (:mod:`kfr.finetune.data`).

The loss of an optimizer step is the mean over every trained token of the step, whatever the
split into micro-batches, accumulation and ranks: each micro-batch carries its step's token count
(``step_targets``, counted over every rank's share, which all ranks know), and the module divides
the micro-batch's summed loss by it (:mod:`kfr.finetune.module`). A per-micro-batch mean would
weight a token by the size of the micro-batch it fell in, so 1 and 2 processes (or micro-batches
of 4 and of 2) would learn different weights, although the checkpoint key (rightly) leaves
devices and micro-batch out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from kfr.core.errors import UserError
from kfr.core.schema import PromptStyle
from kfr.data.schema import QaPair, Question
from kfr.evaluation.loglikelihood import split_tokens
from kfr.evaluation.prompts import TARGET_DELIMITER, build_context
from kfr.finetune.data import (
    ResumableLoader,
    encode_texts,
    rank_share,
)

IGNORE = -100  # label of tokens without loss (prompt, padding): transformers' ignore index


@dataclass(frozen=True)
class TrainingExample:
    """``context`` is read, ``target`` is learnt; ``teacher_context`` (distill) is what the
    teacher reads instead of ``context``. A document example has no context and no target
    split: ``document`` holds its text, trained on whole."""

    context: str = ""
    target: str = ""
    teacher_context: str | None = None
    document: str | None = None

    def key(self) -> list[str | None]:
        """What the training cache key hashes."""
        return [self.context, self.target, self.teacher_context, self.document]


def qa_prompt(question: str, passages: Sequence[str] = ()) -> str:
    """The evaluation's cloze prompt for a training question (passages first, as for RAG)."""
    stub = Question(id="train", question=question, choices=("",), answer=0)
    return build_context(stub, PromptStyle.cloze, passages=passages)


def qa_example(pair: QaPair, passages: Sequence[str] = ()) -> TrainingExample:
    return TrainingExample(qa_prompt(pair.question, passages), TARGET_DELIMITER + pair.answer)


def mix_documents(
    examples: list[TrainingExample], documents: Sequence[str], ratio: float
) -> list[TrainingExample]:
    """``examples`` plus round(ratio x len(examples)) document examples, documents cycled."""
    if ratio < 0:
        raise UserError(f"must be >= 0, got {ratio}", field="qa.documents_ratio")
    count = round(ratio * len(examples))
    if count and not documents:
        raise UserError("documents_ratio > 0 needs a knowledge base", field="qa.documents_ratio")
    extra = [TrainingExample(document=documents[i % len(documents)]) for i in range(count)]
    return examples + extra


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    target_start: int  # index in input_ids of the first target token (distill aligns on it)


def encode_example(tokenizer, example: TrainingExample, max_length: int) -> EncodedExample:
    """Token ids and labels; cut from the left to ``max_length`` (the answer is never cut)."""
    if example.document is not None:
        (ids,) = encode_texts(tokenizer, [example.document])
        ids = ids[:max_length]
        return EncodedExample(ids, list(ids), 0)
    context, target = split_tokens(tokenizer, example.context, example.target)
    if not target:
        raise UserError(f"empty answer in a training example: {example.context[-80:]!r}")
    keep = max(0, max_length - len(target))
    context = context[-keep:] if keep else []
    return EncodedExample(context + target, [IGNORE] * len(context) + target, len(context))


def predicted_targets(labels: Sequence[int]) -> int:
    """Tokens a sequence trains on: labelled positions after the first (position p predicts
    token p + 1, so the first token is never a prediction)."""
    return sum(label != IGNORE for label in labels[1:])


def step_targets(
    target_counts: Sequence[int], order: Sequence[int], world: int, micro: int, accumulate: int
) -> list[int]:
    """Trained tokens of the optimizer step each of a rank's micro-batches belongs to.

    ``order`` is the epoch's global order; every rank takes its :func:`rank_share`, cuts it into
    micro-batches and steps every ``accumulate`` of them (the last window may be shorter). The
    count sums that window over all ranks, so it is the same on every rank.
    """
    shares = [rank_share(torch.tensor(list(order)), r, world).tolist() for r in range(world)]
    n_batches = -(-len(shares[0]) // micro)
    per_batch = [
        sum(target_counts[i] for share in shares for i in share[b * micro : (b + 1) * micro])
        for b in range(n_batches)
    ]
    counts = []
    for start in range(0, n_batches, accumulate):
        window = per_batch[start : start + accumulate]
        counts += [sum(window)] * len(window)
    return counts


class _Batches(Dataset):
    """Ready micro-batches (a rank's share, in order): the loader batches nothing itself."""

    def __init__(self, batches: Sequence[list[dict]], targets: Sequence[int], pad_id: int) -> None:
        self.batches, self.targets, self.pad_id = list(batches), list(targets), pad_id

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = collate(self.batches[index], self.pad_id)
        batch["step_targets"] = torch.tensor(self.targets[index], dtype=torch.long)
        return batch


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions some row predicts a trained token from (p predicts p + 1): where the module
    computes the output head (:mod:`kfr.finetune.module`)."""
    return (labels[:, 1:] != IGNORE).any(0).nonzero()[:, 0]


def collate(items: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels, ``keep`` (the positions the loss
    needs logits at: :func:`target_positions`) and the teacher's targets, if any."""
    width = max(len(item["input_ids"]) for item in items)
    batch = {
        "input_ids": torch.full((len(items), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(items), width), dtype=torch.long),
        "labels": torch.full((len(items), width), IGNORE, dtype=torch.long),
    }
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        batch["input_ids"][row, :n] = torch.tensor(item["input_ids"])
        batch["attention_mask"][row, :n] = 1
        batch["labels"][row, :n] = torch.tensor(item["labels"])
    batch["keep"] = target_positions(batch["labels"])
    if "teacher_ids" in items[0]:
        k = items[0]["teacher_ids"].shape[-1]
        batch["teacher_ids"] = torch.zeros((len(items), width, k), dtype=torch.long)
        batch["teacher_logprobs"] = torch.full((len(items), width, k), -torch.inf)
        for row, item in enumerate(items):
            start, ids = item["target_start"], item["teacher_ids"]
            # Position p predicts token p + 1: the teacher's distribution over target token j
            # sits where the student predicts it, at target_start + j - 1.
            span = slice(start - 1, start - 1 + ids.shape[0])
            batch["teacher_ids"][row, span] = ids
            batch["teacher_logprobs"][row, span] = item["teacher_logprobs"]
    return batch


class ExampleData(pl.LightningDataModule):
    """Batches of encoded examples; bind the tokenizer and sizes late with :meth:`connect`."""

    def __init__(self, examples: Sequence[TrainingExample], *, seed: int = 0) -> None:
        super().__init__()
        if not examples:
            raise UserError("no training examples", field="qa")
        self.examples = list(examples)
        self.seed = seed
        self.tokenizer = None
        self.batch_size = 1
        self.max_length = 2048
        self.items: list[dict] | None = None
        self.extras: list[dict] | None = None  # per example, e.g. the teacher's targets

    def connect(self, tokenizer, batch_size: int, max_length: int) -> None:
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length
        self.items = None

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return
        if self.tokenizer is None:
            raise RuntimeError("call connect(tokenizer, batch_size, max_length) first")
        self.items = []
        for index, example in enumerate(self.examples):
            encoded = encode_example(self.tokenizer, example, self.max_length)
            item = {
                "input_ids": encoded.input_ids,
                "labels": encoded.labels,
                "target_start": encoded.target_start,
            }
            if self.extras is not None:
                item.update(self.extras[index])
            self.items.append(item)

    @property
    def n_tokens(self) -> int:
        """Tokens of one epoch (prompts included: what the forward passes cost)."""
        self.setup()
        return sum(len(item["input_ids"]) for item in self.items)

    @property
    def n_target_tokens(self) -> int:
        self.setup()
        return sum(sum(label != IGNORE for label in item["labels"]) for item in self.items)

    def epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def train_dataloader(self) -> DataLoader:
        self.setup()
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        order = self.epoch_order(epoch)
        share = rank_share(torch.tensor(order), rank, world).tolist()
        micro = self.batch_size
        batches = [
            [self.items[i] for i in share[start : start + micro]]
            for start in range(0, len(share), micro)
        ]
        counts = [predicted_targets(item["labels"]) for item in self.items]
        targets = step_targets(counts, order, world, micro, accumulate)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # batch_size=None: the dataset yields whole micro-batches, each with its step's count.
        loader = ResumableLoader(_Batches(batches, targets, pad_id), batch_size=None)
        loader.trainer, loader.epoch = trainer, epoch
        return loader

"""Knowledge-base text packed into equal training blocks, as the paper fine-tunes.

Every text (a document or one paraphrase of it) becomes ``BOS + tokens + EOS``; the texts are
concatenated in a shuffled order and cut into ``block_size``-token blocks, so a block may hold
the end of one document and the start of the next, the boundary marked by EOS/BOS. No block is
padded: the last one is completed with the first tokens of the same epoch's stream (real text,
repeated), so every trained token is a real one and every token is trained once per epoch.

The order is drawn again every epoch (``random.Random`` seeded by seed and epoch), so documents
meet different neighbours and block boundaries fall elsewhere; Lightning reloads the dataloader
each epoch (``reload_dataloaders_every_n_epochs=1``) to get it. Every rank of a distributed run
packs the same blocks and takes every world-size-th one (:func:`rank_share`); a run resumed
mid-epoch skips the batches it had already trained (:class:`ResumableLoader`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from kfr.core.errors import UserError


def encode_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text with its boundary tokens: BOS before, EOS after (where defined)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None and eos is None:
        raise UserError(
            "the tokenizer has neither a BOS nor an EOS token to mark document boundaries; "
            "set model.tokenizer to one that has",
            field="model.tokenizer",
        )
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    head = [] if bos is None else [bos]
    tail = [] if eos is None else [eos]
    return [head + ids + tail for ids in encoded]


def pack_blocks(token_lists: Sequence[Sequence[int]], order: Sequence[int], block_size: int):
    """``[n_blocks, block_size]`` ids: the texts in ``order``, concatenated and cut.

    The stream's tail is completed from its own start, so ``n_blocks = ceil(tokens / block)``.
    """
    stream = [token for index in order for token in token_lists[index]]
    if len(stream) < block_size:
        raise ValueError(f"{len(stream)} tokens cannot fill one block of {block_size}")
    n_blocks = math.ceil(len(stream) / block_size)
    stream += stream[: n_blocks * block_size - len(stream)]
    return torch.tensor(stream, dtype=torch.long).view(n_blocks, block_size)


class _Blocks(Dataset):
    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.blocks[index]


class PackedKnowledgeData(pl.LightningDataModule):
    """Training blocks of ``texts``; bind the tokenizer and sizes late with :meth:`connect`."""

    def __init__(self, texts: Sequence[str], *, seed: int = 0) -> None:
        super().__init__()
        if not texts:
            raise UserError("no knowledge-base text to fine-tune on", field="data.knowledge")
        self.texts = list(texts)
        self.seed = seed
        self.tokenizer = None
        self.batch_size = 1
        self.block_size = 256
        self._token_lists: list[list[int]] | None = None

    def connect(self, tokenizer, batch_size: int, block_size: int) -> None:
        """Bind the model's tokenizer, the per-device batch size and the block length."""
        if block_size < 2:
            raise UserError(f"must be at least 2, got {block_size}", field="finetune.block_size")
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.block_size = block_size
        self._token_lists = None

    def setup(self, stage: str | None = None) -> None:
        if self._token_lists is not None:
            return
        if self.tokenizer is None:
            raise RuntimeError("call connect(tokenizer, batch_size, block_size) first")
        token_lists = encode_texts(self.tokenizer, self.texts)
        total = sum(len(tokens) for tokens in token_lists)
        if total < self.block_size:
            raise UserError(
                f"the knowledge base (with any paraphrases) has {total} tokens, fewer than one "
                f"training block of {self.block_size}: add documents or paraphrases, or lower "
                "finetune.block_size",
                field="finetune.block_size",
            )
        self._token_lists = token_lists

    @property
    def n_tokens(self) -> int:
        """Tokens of one epoch's stream before the last block is completed."""
        self.setup()
        return sum(len(tokens) for tokens in self._token_lists)

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n_tokens / self.block_size)

    def epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.texts)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def blocks(self, epoch: int) -> torch.Tensor:
        self.setup()
        return pack_blocks(self._token_lists, self.epoch_order(epoch), self.block_size)

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        blocks = self.blocks(epoch)
        if self.trainer is not None and self.trainer.world_size > 1:
            blocks = rank_share(blocks, self.trainer.global_rank, self.trainer.world_size)
        # The blocks are already in a fresh random order: a sequential sampler keeps ranks and
        # repeated runs in step.
        loader = ResumableLoader(_Blocks(blocks), batch_size=self.batch_size, shuffle=False)
        loader.trainer, loader.epoch = self.trainer, epoch
        return loader


def batches_done_before_restart(trainer, n_batches: int, epoch: int) -> int:
    """Batches of this epoch trained before the checkpoint being resumed from, else 0.

    Lightning restores its counters and then runs only the epoch's remaining batches; without
    skipping, those would be the epoch's first batches again (seen twice) and its last ones
    never. The count comes from the checkpoint's global step and epoch, which the module
    records when it is restored (resumable checkpoints are written right after an optimizer
    step, kfr.finetune.train); it applies once, to the first iteration of that epoch's loader.
    Lightning's own counters are no help here: they are not yet restored when that iteration
    starts.
    """
    module = getattr(trainer, "lightning_module", None) if trainer is not None else None
    if module is None or not getattr(module, "resume_skip_pending", False):
        return 0
    if epoch != module.resumed_from_epoch:  # a loader made before the restore, for epoch 0
        return 0
    module.resume_skip_pending = False
    accumulate = trainer.accumulate_grad_batches
    steps_per_epoch = -(-n_batches // accumulate)
    done = (module.resumed_from_step - module.resumed_from_epoch * steps_per_epoch) * accumulate
    return done if 0 < done < n_batches else 0


def rank_share(blocks: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s blocks under data parallelism: every ``world_size``-th block, the list
    first wrapped around to a multiple of ``world_size`` so that every rank gets as many (what
    torch's DistributedSampler does; kfr shards itself, see kfr.finetune.train)."""
    total = -(-blocks.shape[0] // world_size) * world_size
    indices = [i % blocks.shape[0] for i in range(total)]
    return blocks[indices[rank::world_size]]


class ResumableLoader(DataLoader):
    """A DataLoader whose iteration skips the batches a resumed run had trained: the same length,
    so Lightning's batch counts and learning-rate schedule are unchanged.

    The count is read when iteration starts, not when the loader is made: Lightning makes the
    first epoch's loader before it restores the checkpoint (to count the steps for the
    learning-rate schedule) and does not make it again, so a run resumed in its first epoch
    would otherwise train that epoch's first batches twice.
    """

    trainer = None  # set by the data module: the restart state is read from it
    epoch = 0  # the epoch whose order this loader holds

    def __iter__(self):
        skip = batches_done_before_restart(self.trainer, len(self), self.epoch)
        return itertools.islice(super().__iter__(), skip, None)

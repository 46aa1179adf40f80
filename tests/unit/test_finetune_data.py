"""Packing the knowledge base into training blocks: boundaries, no padding, new order per epoch."""

from __future__ import annotations

import pytest
import torch

from kfr.core.errors import UserError
from kfr.finetune.data import PackedKnowledgeData, encode_texts, pack_blocks

TEXTS = [
    f"Document {i} says that the lighthouse keeper number {i} liked the oboe." for i in range(12)
]


def _data(tokenizer, block_size: int = 32, batch_size: int = 4, texts=TEXTS, seed: int = 0):
    data = PackedKnowledgeData(texts, seed=seed)
    data.connect(tokenizer, batch_size, block_size)
    data.setup()
    return data


def test_every_text_is_wrapped_in_bos_and_eos(tiny_lm):
    tok = tiny_lm.tokenizer
    encoded = encode_texts(tok, TEXTS[:3])
    for text, ids in zip(TEXTS[:3], encoded, strict=True):
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert ids[1:-1] == tok(text, add_special_tokens=False)["input_ids"]


def test_blocks_are_the_stream_cut_in_order_and_completed_from_its_start():
    token_lists = [[1, 10, 11, 2], [1, 20, 2], [1, 30, 31, 32, 2]]
    blocks = pack_blocks(token_lists, [2, 0, 1], block_size=4)
    stream = [1, 30, 31, 32, 2, 1, 10, 11, 2, 1, 20, 2]
    assert blocks.tolist() == [stream[0:4], stream[4:8], stream[8:12]]
    # 13 tokens in blocks of 5: the third block ends with the stream's first two tokens again.
    blocks = pack_blocks([[1, 5, 6, 7, 2], [1, 8, 2], [1, 9, 9, 9, 2]], [0, 1, 2], block_size=5)
    assert blocks.tolist()[-1] == [9, 9, 2, 1, 5]
    with pytest.raises(ValueError):
        pack_blocks([[1, 2]], [0], block_size=3)


def test_packed_epoch_holds_every_text_once_with_no_padding(tiny_lm):
    tok = tiny_lm.tokenizer
    data = _data(tok)
    blocks = data.blocks(epoch=0)
    assert blocks.shape == (data.n_blocks, 32)
    flat = blocks.flatten().tolist()
    # Real tokens only: the tail repeats the stream's start instead of padding.
    repeated = data.n_blocks * 32 - data.n_tokens
    assert 0 <= repeated < 32
    stream = flat[: data.n_tokens]
    assert stream.count(tok.bos_token_id) == len(TEXTS)
    assert stream.count(tok.eos_token_id) == len(TEXTS)
    # Document boundaries: every EOS (but the stream's last) is followed by a BOS.
    for i, token in enumerate(stream[:-1]):
        if token == tok.eos_token_id:
            assert stream[i + 1] == tok.bos_token_id
    decoded = tok.decode(stream, skip_special_tokens=True)
    for text in TEXTS:
        assert text in decoded
    assert flat[data.n_tokens :] == stream[:repeated]


def test_order_changes_every_epoch_and_repeats_for_a_seed(tiny_lm):
    tok = tiny_lm.tokenizer
    data = _data(tok)
    assert not torch.equal(data.blocks(0), data.blocks(1))
    assert torch.equal(data.blocks(1), _data(tok).blocks(1))
    assert not torch.equal(data.blocks(0), _data(tok, seed=1).blocks(0))
    loader = data.train_dataloader()  # no trainer attached: epoch 0
    first = next(iter(loader))
    assert first.shape == (4, 32) and torch.equal(first, data.blocks(0)[:4])


def test_a_knowledge_base_smaller_than_one_block_is_a_user_error(tiny_lm):
    data = PackedKnowledgeData(["Tiny."])
    data.connect(tiny_lm.tokenizer, 4, 256)
    with pytest.raises(UserError, match=r"fewer than one training block of 256.*block_size"):
        data.setup()
    with pytest.raises(UserError, match="no knowledge-base text"):
        PackedKnowledgeData([])


def test_rank_shares_cover_every_block_and_are_equal_in_size():
    from kfr.finetune.data import rank_share

    blocks = torch.arange(7).unsqueeze(1)  # 7 blocks for 3 ranks: wrapped around to 9
    shares = [rank_share(blocks, rank, 3).flatten().tolist() for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]
    assert rank_share(blocks, 0, 1).flatten().tolist() == list(range(7))

"""trainer.micro_batch_size=auto: the micro-batch from free GPU memory (faked here), a divisor of
the per-device batch, which never changes; the CPU takes the fallback; not in the training key."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig

from kfr.core.errors import UserError
from kfr.core.schema import typed_config
from kfr.finetune.keys import training_key
from kfr.finetune.settings import (
    AUTO_FALLBACK,
    auto_micro_batch,
    check_micro_batch_size,
    micro_batch_and_accumulation,
    training_bytes_per_token,
)
from tests.conftest import compose_config

GIB = 2**30
SMOLLM2 = LlamaConfig(
    hidden_size=576,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    intermediate_size=1536,
    vocab_size=49152,
)


def _cfg(*overrides):
    base = ["method=ft", "model=tiny_llama", "trainer=gpu", "trainer.accelerator=cpu"]
    return typed_config(compose_config([*base, *overrides]))


def test_gpu_profile_asks_for_auto_and_the_cpu_takes_the_fallback():
    cfg = _cfg("finetune.batch_size=8")
    assert cfg.trainer.micro_batch_size == "auto"
    assert micro_batch_and_accumulation(cfg) == (AUTO_FALLBACK, 8 // AUTO_FALLBACK)
    # a fallback that does not divide the batch: its largest divisor below it
    assert micro_batch_and_accumulation(_cfg("finetune.batch_size=6")) == (3, 2)


def test_per_token_estimate_is_in_the_right_range():
    per_token = training_bytes_per_token(SMOLLM2)
    assert 1.0e6 < per_token < 2.0e6  # ~1 MB of blocks + ~0.5 MB of head per token
    assert training_bytes_per_token(SMOLLM2, checkpointing=True) < per_token / 2


@pytest.mark.parametrize(("free_gib", "expected"), [(140, 16), (20, 4), (10, 2), (1, 1)], ids=str)
def test_auto_micro_batch_from_faked_free_memory(free_gib, expected):
    sequence = 2048 * training_bytes_per_token(SMOLLM2)  # ~2.5 GiB a block of 2048
    micro = auto_micro_batch(
        16, free_bytes=free_gib * GIB, fixed_bytes=2 * GIB, sequence_bytes=sequence
    )
    assert micro == expected and 16 % micro == 0


def test_effective_batch_unchanged_and_micro_a_divisor():
    cfg = _cfg("finetune.batch_size=12", "finetune.block_size=2048")
    sequence = 2048 * training_bytes_per_token(SMOLLM2)
    for free_gib, micro in ((140, 12), (30, 6), (22, 4), (12, 2), (4, 1)):
        memory = {"free_bytes": free_gib * GIB, "fixed_bytes": GIB, "sequence_bytes": sequence}
        got, accumulate = micro_batch_and_accumulation(cfg, memory=memory)
        assert (got, got * accumulate) == (micro, 12), free_gib


def test_bad_values_are_user_errors():
    check_micro_batch_size("auto")
    check_micro_batch_size(3)
    for bad in (0, -2, "many", 1.5, True):
        with pytest.raises(UserError, match="micro_batch_size"):
            check_micro_batch_size(bad)


def test_micro_batch_stays_out_of_the_training_key():
    texts = ["one document", "another"]
    keys = {
        training_key(_cfg("finetune.batch_size=8", f"trainer.micro_batch_size={m}"), texts)
        for m in ("auto", 2, 8)
    }
    assert len(keys) == 1

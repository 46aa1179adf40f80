"""The benchmarks' FLOP counts agree with what torch actually multiplies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.roofline import ModelShape, matmul_peak


def _matmul_flops(counter: FlopCounterMode) -> int:
    """FLOPs of the dense matmuls (linear layers), attention kernels left out."""
    counts = counter.get_flop_counts()["Global"]
    return sum(v for op, v in counts.items() if str(op).split(".")[1] in {"mm", "addmm", "bmm"})


def test_parameter_counts_match_the_model(tiny_lm):
    model = tiny_lm.model
    shape = ModelShape.from_config(model.config)
    linear = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layers." in name
    )
    assert shape.linear_params == linear
    assert shape.head_params == model.get_output_embeddings().weight.numel()


def test_scoring_flops_count_the_linear_layers_torch_runs(tiny_lm):
    """Packed unit of a 20-token context and choices of 3 and 2 tokens: 20 + 2 + 1 inputs go
    through the blocks, 5 predicted tokens through the head."""
    model = tiny_lm.model
    shape = ModelShape.from_config(model.config)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    inputs = torch.randint(0, model.config.vocab_size, (1, 23))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        hidden = decoder(input_ids=inputs, use_cache=False).last_hidden_state
        head(hidden[0, :5])
    attention = shape.scoring_flops([(20, [3, 2])]) - 2 * shape.linear_params * 23
    attention -= 2 * shape.head_params * 5
    # Attention pairs: 20*21/2 inside the context; choice 1's two inputs see the context and
    # 1, 2 of its own tokens (21 + 22); choice 2's one input sees 21.
    assert attention == shape.attention_flops(20 * 21 // 2 + (21 + 22) + 21)
    assert _matmul_flops(counter) == 2 * shape.linear_params * 23 + 2 * shape.head_params * 5


def test_training_flops_are_three_forwards(tiny_lm):
    model = tiny_lm.model
    shape = ModelShape.from_config(model.config)
    inputs = torch.randint(0, model.config.vocab_size, (2, 16))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=inputs, labels=inputs).loss.backward()
    model.zero_grad(set_to_none=True)
    dense = 6 * (shape.linear_params + shape.head_params) * 32
    assert _matmul_flops(counter) == dense
    assert shape.training_flops(2, 16) == dense + 3 * shape.attention_flops(2 * 16 * 17 // 2)


def test_frozen_training_flops_skip_weight_gradients(tiny_lm):
    """LoRA's base weights are frozen: torch computes input gradients only. Inputs that need a
    gradient stand in for adapters below every layer (their own FLOPs are left out)."""
    model = tiny_lm.model
    shape = ModelShape.from_config(model.config)
    inputs = torch.randint(0, model.config.vocab_size, (2, 16))
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        embeds = model.get_input_embeddings()(inputs).detach().requires_grad_()
        with FlopCounterMode(display=False) as counter:
            model(inputs_embeds=embeds, labels=inputs).loss.backward()
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable[name])
    dense = 4 * (shape.linear_params + shape.head_params) * 32
    assert _matmul_flops(counter) == dense
    frozen = shape.training_flops(2, 16, frozen=True)
    assert frozen == dense + 3 * shape.attention_flops(2 * 16 * 17 // 2)


def test_matmul_peak_measures_every_shape():
    peak = matmul_peak([(64, 32, 48), (128, 32, 16)], seconds_per_shape=0.02)
    assert set(peak.per_shape) == {"64x32x48", "128x32x16"}
    assert peak.gflops == max(peak.per_shape.values()) > 0
    assert peak.share(peak.gflops * 1e9, 1.0) == pytest.approx(1.0)
    assert peak.cpu_gflops > 0
    assert peak.cpu_share(peak.cpu_gflops * 1e9, 1.0) == pytest.approx(1.0)


def test_memory_watermark_sees_a_large_allocation():
    """In a fresh process (this one's high-water mark may already be above anything new)."""
    code = (
        "import torch\n"
        "from benchmarks.roofline import MemoryWatermark\n"
        "with MemoryWatermark() as m:\n"
        "    block = torch.ones(1024 * 2**20 // 4)\n"
        "print(m.rss_before_mb, m.rss_mb, m.rss_grew, m.gpu_mb)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    # Importing torch peaks below 1 GB; the touched 1 GB block must lift the mark above it.
    assert float(out[0]) < 1024 < float(out[1]) and out[2:] == ["True", "None"]

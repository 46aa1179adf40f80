"""The machine's own limit, for the other benchmarks: matmul peak, necessary FLOPs, peak memory.

A ratio against a peer says who is faster; a share of the machine's peak says how much faster
anyone could be. Three pieces, shared by ``eval_throughput``, ``train_throughput``,
``retrieval`` and ``scaling``:

- :func:`matmul_peak`: the best float32 (bf16 on a GPU) matmul throughput this process reaches,
  measured at the model's own GEMM shapes (every linear layer, with as many rows as a typical
  batch has tokens), in the same run and with the same threads as the workload. A roofline from
  a vendor sheet would count vector units the model's shapes never fill; this is the ceiling a
  perfect implementation of the same model on the same library could reach.
- :class:`ModelShape` with :meth:`scoring_flops` and :meth:`training_flops`: the FLOPs a
  workload needs at minimum. Scoring: every shared context once, each choice's tokens once
  against it, attention over what each position may see, and the output head only where a
  continuation token is predicted. Training: 6 x (linear parameters + head) x tokens, plus the
  attention (3 x its forward), the usual "model FLOPs" of MFU.
- :func:`peak_rss_mb` / :class:`MemoryWatermark`: the process's peak resident memory (Linux
  ``ru_maxrss``), and the GPU's peak allocation when there is one.

Achieved/peak = necessary FLOPs / seconds / :func:`matmul_peak`. Work a scorer does beyond the
minimum (lm-eval's full-vocabulary head at every position, a context computed once per choice)
is not credited, which is the point: it shows how far each is from the limit.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a decoder-only transformer's config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    gated_mlp: bool = True  # SwiGLU/GeGLU: gate, up and down projections

    @classmethod
    def from_config(cls, config) -> ModelShape:
        config = getattr(config, "text_config", None) or config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=config.vocab_size,
        )

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer of one block (the head is separate)."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        mlp = [(h, self.intermediate)] * (2 if self.gated_mlp else 1) + [(self.intermediate, h)]
        return [(h, q), (h, kv), (h, kv), (q, h), *mlp]

    @property
    def linear_params(self) -> int:
        """Weights of the blocks' linear layers (no embeddings, norms or head)."""
        return self.layers * sum(i * o for i, o in self.linear_shapes())

    @property
    def head_params(self) -> int:
        return self.hidden * self.vocab

    def attention_flops(self, attended_pairs: int) -> int:
        """Forward FLOPs of QK^T and AV for ``attended_pairs`` (query, key) pairs, all layers."""
        return 4 * self.layers * self.heads * self.head_dim * attended_pairs

    def scoring_flops(self, units: Iterable[tuple[int, Sequence[int]]]) -> int:
        """Minimum forward FLOPs to score packed units: ``(context tokens, [choice tokens])``.

        Each choice's last token is predicted but never an input; each of its tokens is predicted
        once through the head.
        """
        total = 0
        for context, choices in units:
            inputs = context + sum(n - 1 for n in choices)
            pairs = context * (context + 1) // 2  # causal attention inside the context
            for n in choices:  # choice token j sees the context and choice tokens 0..j
                pairs += sum(context + j + 1 for j in range(n - 1))
            predicted = sum(choices)
            total += 2 * self.linear_params * inputs + self.attention_flops(pairs)
            total += 2 * self.head_params * predicted
        return total

    def training_flops(self, sequences: int, length: int, *, frozen: bool = False) -> int:
        """Model FLOPs of training on ``sequences`` causal sequences of ``length`` tokens: forward
        + backward = 3 x forward, head at every position. ``frozen`` (LoRA, QLoRA): the weights
        get no gradient, so the backward of a linear layer is its input gradient only (4 x
        instead of 6 x parameters x tokens; the adapters' own FLOPs are under 1% and left out).
        """
        tokens = sequences * length
        pairs = sequences * length * (length + 1) // 2
        dense = 2 * (self.linear_params + self.head_params) * tokens
        return (2 if frozen else 3) * dense + 3 * self.attention_flops(pairs)

    def gemm_shapes(self, rows: int) -> list[tuple[int, int, int]]:
        """(M, K, N) of every distinct linear GEMM of a block, and the head, at ``rows`` tokens."""
        shapes = {(rows, i, o) for i, o in self.linear_shapes()}
        shapes.add((rows, self.hidden, self.vocab))
        return sorted(shapes)


@dataclass
class Peak:
    device: str
    dtype: str
    threads: int
    gflops: float  # the best of the shapes: the ceiling used for achieved/peak
    per_shape: dict[str, float]  # "MxKxN" -> GFLOP/s
    # The same from CPU time (per thread, CPU only): with one thread, what other processes on
    # the cores barely change, so shares from CPU seconds hold on a busy machine too.
    cpu_gflops: float | None = None

    def share(self, flops: float, seconds: float) -> float:
        """Achieved/peak of ``flops`` done in ``seconds``."""
        return flops / seconds / 1e9 / self.gflops

    def cpu_share(self, flops: float, cpu_seconds: float) -> float | None:
        """Achieved/peak of ``flops`` done in ``cpu_seconds`` of this process's CPU time."""
        if self.cpu_gflops is None:
            return None
        return flops / cpu_seconds / 1e9 / self.cpu_gflops

    def describe(self) -> str:
        shapes = ", ".join(f"{k}: {v:.0f}" for k, v in self.per_shape.items())
        cpu = "" if self.cpu_gflops is None else f", {self.cpu_gflops:.1f} per CPU-second"
        return (
            f"{self.dtype} matmul peak {self.gflops:.1f} GFLOP/s on {self.device}{cpu} "
            f"({self.threads} threads; per shape {shapes})"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    shapes: Sequence[tuple[int, int, int]],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    seconds_per_shape: float = 0.5,
) -> Peak:
    """Best matmul throughput over ``shapes`` ((M, K, N); y = x @ W.T as nn.Linear computes it).

    Each shape runs for about ``seconds_per_shape`` after a warm-up; the best repetition counts
    (the ceiling is what the machine can do, so a repetition slowed by another process is noise).
    """
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    per_shape: dict[str, float] = {}
    cpu_best: dict[str, float] = {}
    generator = torch.Generator(device="cpu").manual_seed(0)
    for m, k, n in shapes:
        x = torch.randn(m, k, generator=generator).to(device, dtype)
        w = torch.randn(n, k, generator=generator).to(device, dtype)
        out = torch.empty(m, n, device=device, dtype=dtype)
        for _ in range(2):
            torch.matmul(x, w.t(), out=out)
        _sync(device)
        best = cpu = float("inf")
        deadline = time.perf_counter() + seconds_per_shape
        while time.perf_counter() < deadline:
            started, started_cpu = time.perf_counter(), time.process_time()
            torch.matmul(x, w.t(), out=out)
            _sync(device)
            best = min(best, time.perf_counter() - started)
            cpu = min(cpu, time.process_time() - started_cpu)
        per_shape[f"{m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
        if device.type == "cpu" and cpu > 0:
            # CPU seconds of all threads: per thread-second, times the threads, is per second.
            cpu_best[f"{m}x{k}x{n}"] = 2 * m * k * n / cpu / 1e9
        del x, w, out
    return Peak(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        threads=torch.get_num_threads(),
        gflops=max(per_shape.values()),
        per_shape=per_shape,
        cpu_gflops=max(cpu_best.values()) if cpu_best else None,
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB. Linux's VmHWM, which starts afresh
    at exec; ru_maxrss (KiB) elsewhere, which a child started from a large process inherits."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    """The largest peak resident memory of any waited-for child process, in MB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def gpu_peak_mb(device: str | torch.device = "cpu") -> float | None:
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


class MemoryWatermark:
    """Peak memory of one workload inside a process: RSS can only be read as the process's
    high-water mark, so a workload that stays below an earlier peak reports that peak (say so,
    or run it in its own process); the GPU's peak is reset at the start and is the workload's."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def __enter__(self) -> MemoryWatermark:
        self.rss_before_mb = peak_rss_mb()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.rss_mb = peak_rss_mb()
        self.rss_grew = self.rss_mb > self.rss_before_mb
        self.gpu_mb = gpu_peak_mb(self.device)

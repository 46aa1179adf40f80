"""The GPU benchmark's scoring half: kfr's scorer against lm-eval's HF backend in one process.

Both score the same requests (novel-facts questions as 0-shot cloze prompts of ~20 tokens, or
with knowledge-base passages before them up to ~1000 tokens:
:func:`benchmarks.eval_throughput.rag_requests`) with the same in-memory model (random weights
of :data:`benchmarks.gpu_bench_fit.SHAPES`, created on the device in the case's dtype): kfr's
:func:`kfr.evaluation.loglikelihood.score_requests` at ``batch`` questions per forward pass, and
lm-eval's ``HFLM`` given that model object, ``batch_size=auto`` (its own search for the largest
batch that fits, up to ``max_batch_size``; a fixed batch in the dry run, where the search would
try 64 sequences of the full context length on the CPU) and ``softmax_dtype=float32`` (kfr's
log-softmax is float32 too, so bfloat16 predictions can agree). Each side scores the whole list
once untimed (warm-up; lm-eval's batch search happens then), then once timed. Predictions
(``acc``'s argmax) must be identical; the largest log-likelihood difference is reported.
Achieved/peak: the minimum FLOPs of the requests (:func:`benchmarks.eval_throughput.
necessary_flops`) / seconds / the matmul peak measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from benchmarks.gpu_bench_fit import SHAPE_KEYS, SHAPES
from benchmarks.roofline import MemoryWatermark


@dataclass(frozen=True)
class ScoreCase:
    name: str
    shape: str
    dtype: str  # float32 | bfloat16
    context: str  # short | long
    questions: int
    batch: int  # kfr's questions per forward pass
    context_tokens: int = 1000  # long contexts: about this many tokens


SCORE_CASES = (
    ScoreCase("score_135m_short_fp32", "smollm2_135m", "float32", "short", 240, 64),
    ScoreCase("score_135m_short_bf16", "smollm2_135m", "bfloat16", "short", 240, 64),
    ScoreCase("score_135m_long_fp32", "smollm2_135m", "float32", "long", 64, 16),
    ScoreCase("score_135m_long_bf16", "smollm2_135m", "bfloat16", "long", 64, 16),
    ScoreCase("score_7b_short_bf16", "mistral_7b", "bfloat16", "short", 120, 32),
    ScoreCase("score_7b_long_bf16", "mistral_7b", "bfloat16", "long", 32, 8),
)
PEER_MAX_BATCH = 512  # lm-eval's batch search starts here (its default, 64, would cap it)
DRY_PEER_BATCH = 8


def dry_case(case: ScoreCase) -> ScoreCase:
    """The same comparison at the dry run's size: 2-layer model, a few questions."""
    questions = 6 if case.context == "short" else 2
    return replace(case, shape="tiny", questions=questions, batch=4, context_tokens=200)


def model_config(case: ScoreCase, *, device: str, tokenizer: str | None) -> Any:
    from omegaconf import OmegaConf

    from kfr.core.schema import ModelConfig

    conf = Path(__file__).resolve().parent.parent / "conf" / "model" / "tiny_llama.yaml"
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(conf))
    for key, value in zip(SHAPE_KEYS, SHAPES[case.shape], strict=True):
        cfg.random_init[key] = value
    cfg.device, cfg.dtype, cfg.max_length = device, case.dtype, 2048
    if tokenizer:
        cfg.tokenizer = tokenizer
    return OmegaConf.to_object(cfg)


def _requests(case: ScoreCase, tokenizer, cache_dir: Path):
    from benchmarks.eval_throughput import rag_requests, spread
    from kfr.core.schema import PromptStyle
    from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts
    from kfr.data.readers import read_knowledge_base, read_questions
    from kfr.evaluation.prompts import build_requests

    data = ensure_novel_facts(NovelFactsSpec(), cache_dir)
    questions = spread(read_questions(data / "questions.jsonl"), case.questions)
    if case.context == "short":
        return questions, build_requests(questions, PromptStyle.cloze)
    documents = read_knowledge_base(data / "knowledge.jsonl")
    return questions, rag_requests(questions, documents, tokenizer, case.context_tokens)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_score(case: ScoreCase, *, device: str, tokenizer: str | None, cache_dir: Path, peak):
    """One comparison: both sides on the same requests, ratio, achieved/peak, memory, agreement."""
    from benchmarks.eval_throughput import necessary_flops
    from benchmarks.lm_eval_peer import evaluate_requests
    from kfr.evaluation.loglikelihood import score_requests
    from kfr.evaluation.metrics import predict
    from kfr.models.loading import load_model

    loaded = load_model(model_config(case, device=device, tokenizer=tokenizer), cache_dir)
    questions, requests = _requests(case, loaded.tokenizer, cache_dir)
    answers = [q.answer for q in questions]
    peer = _peer(loaded, dry=not device.startswith("cuda"))

    def ours():
        return score_requests(
            loaded.model,
            loaded.tokenizer,
            requests,
            max_length=loaded.max_length,
            batch_size=case.batch,
            device=loaded.device,
            progress=False,
        )[0]

    ours()  # warm-up
    evaluate_requests(peer, requests, answers)  # warm-up, and lm-eval's batch search
    with MemoryWatermark(device) as kfr_memory:
        _sync(device)
        started = time.perf_counter()
        scores = ours()
        _sync(device)
        kfr_s = time.perf_counter() - started
    with MemoryWatermark(device) as peer_memory:
        theirs = evaluate_requests(peer, requests, answers)
    ours_pred = [
        p.prediction for p in predict(questions, scores, [r.choice_lengths for r in requests])
    ]
    same = sum(a == b for a, b in zip(ours_pred, theirs.predictions, strict=True))
    diff = max(
        abs(a - b)
        for x, y in zip(scores, theirs.loglikelihoods, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    flops = necessary_flops(
        SimpleNamespace(
            model=loaded.model, tokenizer=loaded.tokenizer, max_length=loaded.max_length
        ),
        requests,
    )
    n = len(requests)
    sides = []
    for seconds, memory in ((kfr_s, kfr_memory), (theirs.seconds_scoring, peer_memory)):
        sides.append(
            {
                "questions_per_s": round(n / seconds, 2),
                "achieved_peak": round(peak.share(flops, seconds), 4),
                "peak_memory_mb": round(
                    memory.gpu_mb if memory.gpu_mb is not None else memory.rss_mb
                ),
                "memory_kind": "gpu allocated" if memory.gpu_mb is not None else "process RSS",
            }
        )
    sides[0]["batch"] = case.batch
    sides[1]["batch"] = _peer_batch(peer)
    tokens = [len(loaded.tokenizer(r.context)["input_ids"]) for r in requests]
    return {
        "name": case.name,
        "kind": "score",
        "shape": case.shape,
        "dtype": case.dtype,
        "context": case.context,
        "questions": n,
        "context_tokens_mean": round(sum(tokens) / n, 1),
        "peer": "lm-eval HFLM",
        "kfr": sides[0],
        "peer_side": sides[1],
        "ratio": round(theirs.seconds_scoring / kfr_s, 3),
        "same_predictions": same,
        "same_predictions_pct": round(100.0 * same / n, 2),
        "max_abs_loglik_diff": diff,
    }


def _peer(loaded, *, dry: bool):
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=loaded.model,
        tokenizer=loaded.tokenizer,
        batch_size=DRY_PEER_BATCH if dry else "auto",
        max_batch_size=PEER_MAX_BATCH,
        max_length=loaded.max_length,
        softmax_dtype=torch.float32,
    )


def _peer_batch(peer) -> str:
    """The batch lm-eval used: fixed, or what its search found (per schedule position)."""
    found = getattr(peer, "batch_sizes", None)
    if str(getattr(peer, "batch_size_per_gpu", "")) == "auto" and found:
        return "auto: " + "/".join(str(v) for v in found.values())
    return str(getattr(peer, "batch_size_per_gpu", "?"))

"""Throughput and agreement of kfr's scorer against lm-eval on the same requests.

Two workloads on the embedded SmolLM2-135M and the novel-facts questions:
- short: 0-shot cloze prompts as kfr builds them;
- rag: the same prompts preceded by knowledge-base passages (the question's own source document,
  then other documents in file order) until the context reaches about ``--context-tokens``.

Both scorers get the same requests and the same batch size; each is warmed up once per workload
before it is timed. lm-eval's time is the time spent inside its ``loglikelihood`` (tokenization
and forward passes, what ``score_requests`` does); its whole ``simple_evaluate`` call is reported
alongside. Questions are taken evenly spread over the set, so the RAG prompts are about many
different people. Run from the repository root::

    .venv/bin/python -m benchmarks.eval_throughput [--questions N] [--batch-size B] [--out FILE]

Wall-clock figures need an otherwise idle machine: with other processes on the cores, OpenMP
threads spin-wait for each other and a multi-threaded run slows down by several times, unevenly
between the two scorers. The load average before and after each workload is printed to show it;
``--threads 1`` gives CPU-time ratios that other processes barely affect.

``--device cuda`` puts both scorers on the GPU (same float32 weights); the default is the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir

from benchmarks.lm_eval_peer import evaluate_requests, load_peer_model
from benchmarks.roofline import MemoryWatermark, ModelShape, Peak, matmul_peak
from kfr.core.schema import PromptStyle
from kfr.data.novel_facts import NovelFactsSpec, ensure_novel_facts
from kfr.data.readers import read_knowledge_base, read_questions
from kfr.data.schema import Document, Question
from kfr.evaluation.loglikelihood import plan_units, score_requests
from kfr.evaluation.metrics import predict
from kfr.evaluation.prompts import ChoiceRequest, build_requests


@dataclass
class Row:
    workload: str
    questions: int
    context_tokens: float  # mean over the questions
    batch_size: int
    kfr_qps: float
    kfr_packed_qps: float  # kfr forced onto the one-forward packed path (the cached path's rival)
    kfr_packed_cpu_ratio: float  # packed-path CPU seconds / kfr's (auto path) CPU seconds
    lm_eval_qps: float  # scoring only: inside lm.loglikelihood
    ratio: float  # kfr_qps / lm_eval_qps
    cpu_ratio: float  # the same from CPU time: robust to other processes with --threads 1
    lm_eval_evaluate_qps: float  # the whole simple_evaluate call
    same_acc_pct: float  # questions whose argmax prediction is the same
    same_acc_norm_pct: float
    max_abs_ll_diff: float
    necessary_gflop: float  # the minimum the requests need (benchmarks.roofline)
    kfr_peak_share: float  # necessary FLOPs / kfr's seconds / the matmul peak
    lm_eval_peak_share: float
    kfr_cpu_peak_share: float | None  # the same from CPU seconds (steady with --threads 1)
    lm_eval_cpu_peak_share: float | None
    kfr_peak_rss_mb: float  # process high-water mark after kfr's run (lm-eval runs after it)
    lm_eval_peak_rss_mb: float
    load_average: tuple[float, float]  # 1-minute load before and after: > threads = contention


def _cache_dir() -> Path:
    # The same default as conf/paths/default.yaml: KFR_CACHE_DIR, else the user cache dir.
    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr"))


def _load_kfr_model(cache_dir: Path, device: str = "cpu"):
    from omegaconf import OmegaConf

    from kfr.core.schema import ModelConfig
    from kfr.models.loading import load_model

    conf = Path(__file__).resolve().parent.parent / "conf" / "model" / "smollm2_135m.yaml"
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(conf))
    cfg.device = device  # lm-eval gets the same device
    return load_model(OmegaConf.to_object(cfg), cache_dir)


def spread(items: Sequence, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them when there are not more)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def rag_passages(
    question: Question, documents: Sequence[Document], tokenizer, target_tokens: int
) -> list[str]:
    """The source document first, then others in order, until the context has ~target tokens."""
    by_id = {d.id: d for d in documents}
    first = [by_id[i] for i in question.source_ids if i in by_id]
    rest = [d for d in documents if d.id not in question.source_ids]
    passages: list[str] = []
    for document in first + rest:
        context = build_requests([question], PromptStyle.cloze, passages={question.id: passages})[
            0
        ].context
        if _n_tokens(tokenizer, context) >= target_tokens:
            break
        passages.append(document.text)
    return passages


def rag_requests(
    questions: Sequence[Question], documents: Sequence[Document], tokenizer, target_tokens: int
) -> list[ChoiceRequest]:
    passages = {q.id: rag_passages(q, documents, tokenizer, target_tokens) for q in questions}
    return build_requests(questions, PromptStyle.cloze, passages=passages)


def _time_kfr(loaded, requests: Sequence[ChoiceRequest], batch_size: int, path: str = "auto"):
    """kfr's scores, wall seconds and CPU seconds (``path``: see ``score_requests``)."""
    start, cpu = time.perf_counter(), time.process_time()
    scores, _ = score_requests(
        loaded.model,
        loaded.tokenizer,
        requests,
        max_length=loaded.max_length,
        batch_size=batch_size,
        device=loaded.device,
        progress=False,
        path=path,
    )
    return scores, time.perf_counter() - start, time.process_time() - cpu


def necessary_flops(loaded, requests: Sequence[ChoiceRequest]) -> int:
    units, _ = plan_units(requests, loaded.tokenizer, loaded.max_length)
    shape = ModelShape.from_config(loaded.model.config)
    return shape.scoring_flops((len(u.context), [len(t) for _, t in u.choices]) for u in units)


def _same_pct(a: Sequence[int], b: Sequence[int]) -> float:
    return 100.0 * float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def run_workload(
    name: str,
    loaded,
    peer,
    questions: Sequence[Question],
    requests: Sequence[ChoiceRequest],
    batch_size: int,
    peak: Peak,
) -> Row:
    answers = [q.answer for q in questions]
    # Warm-up on one question: the first forward passes of a new shape pay for kernel and
    # allocator set-up (about 10 s for the very first call of the process).
    _time_kfr(loaded, requests[:1], batch_size)
    evaluate_requests(peer, requests[:1], answers[:1])

    load_before = os.getloadavg()[0]
    with MemoryWatermark(loaded.device) as kfr_memory:
        scores, kfr_seconds, kfr_cpu = _time_kfr(loaded, requests, batch_size)
    _, packed_seconds, packed_cpu = _time_kfr(loaded, requests, batch_size, path="packed")
    with MemoryWatermark(loaded.device) as peer_memory:
        theirs = evaluate_requests(peer, requests, answers)
    load_after = os.getloadavg()[0]
    flops = necessary_flops(loaded, requests)
    ours = predict(questions, scores, [r.choice_lengths for r in requests])
    diff = max(
        abs(a - b)
        for x, y in zip(scores, theirs.loglikelihoods, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    n = len(requests)
    return Row(
        workload=name,
        questions=n,
        context_tokens=float(np.mean([_n_tokens(loaded.tokenizer, r.context) for r in requests])),
        batch_size=batch_size,
        kfr_qps=n / kfr_seconds,
        kfr_packed_qps=n / packed_seconds,
        kfr_packed_cpu_ratio=packed_cpu / kfr_cpu,
        lm_eval_qps=n / theirs.seconds_scoring,
        ratio=theirs.seconds_scoring / kfr_seconds,
        cpu_ratio=theirs.cpu_seconds_scoring / kfr_cpu,
        lm_eval_evaluate_qps=n / theirs.seconds_evaluate,
        same_acc_pct=_same_pct([p.prediction for p in ours], theirs.predictions),
        same_acc_norm_pct=_same_pct([p.prediction_norm for p in ours], theirs.predictions_norm),
        max_abs_ll_diff=diff,
        necessary_gflop=flops / 1e9,
        kfr_peak_share=peak.share(flops, kfr_seconds),
        lm_eval_peak_share=peak.share(flops, theirs.seconds_scoring),
        kfr_cpu_peak_share=peak.cpu_share(flops, kfr_cpu),
        lm_eval_cpu_peak_share=peak.cpu_share(flops, theirs.cpu_seconds_scoring),
        kfr_peak_rss_mb=kfr_memory.rss_mb,
        lm_eval_peak_rss_mb=peer_memory.rss_mb,
        load_average=(load_before, load_after),
    )


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| workload | questions | context tokens (mean) | batch | kfr q/s | kfr packed-path q/s "
        "| lm-eval q/s | kfr / lm-eval | kfr / lm-eval (CPU time) "
        "| lm-eval q/s (whole simple_evaluate) | necessary GFLOP | kfr achieved/peak "
        "| lm-eval achieved/peak | achieved/peak from CPU time kfr / lm-eval "
        "| packed path / kfr (CPU time) | peak RSS MB kfr / lm-eval "
        "| same pred. acc | same pred. acc_norm | max abs Δ loglik | load avg before/after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.questions} | {r.context_tokens:.0f} | {r.batch_size} "
            f"| {r.kfr_qps:.2f} | {r.kfr_packed_qps:.2f} | {r.lm_eval_qps:.2f} | {r.ratio:.2f}x "
            f"| {r.cpu_ratio:.2f}x | {r.lm_eval_evaluate_qps:.2f} | {r.necessary_gflop:.0f} "
            f"| {r.kfr_peak_share:.0%} | {r.lm_eval_peak_share:.0%} "
            f"| {_pct(r.kfr_cpu_peak_share)} / {_pct(r.lm_eval_cpu_peak_share)} "
            f"| {r.kfr_packed_cpu_ratio:.2f}x "
            f"| {r.kfr_peak_rss_mb:.0f} / {r.lm_eval_peak_rss_mb:.0f} | {r.same_acc_pct:.1f}% "
            f"| {r.same_acc_norm_pct:.1f}% | {r.max_abs_ll_diff:.1e} "
            f"| {r.load_average[0]:.1f} / {r.load_average[1]:.1f} |"
        )
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=120, help="short-prompt questions")
    # 24 keeps the default run near 8 minutes on 2 CPU cores: lm-eval needs ~14 s per RAG
    # question there (four ~1000-token sequences, full-vocabulary log-softmax at every position).
    parser.add_argument("--rag-questions", type=int, default=24, help="RAG-prompt questions")
    parser.add_argument(
        "--context-tokens",
        type=int,
        default=1000,
        help="approximate context length of the RAG prompts",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads (default: the cores this process may use)",
    )
    parser.add_argument(
        "--device", default="cpu", help="where both scorers run: cpu (default), cuda, cuda:N"
    )
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    cache_dir = _cache_dir()
    loaded = _load_kfr_model(cache_dir, args.device)
    peer = load_peer_model(
        loaded.checkpoint,
        batch_size=args.batch_size,
        max_length=loaded.max_length,
        device=args.device,
    )
    data = ensure_novel_facts(NovelFactsSpec(), cache_dir)
    # The ceiling, measured now with the same threads: the model's GEMMs at ~a batch's tokens.
    shape = ModelShape.from_config(loaded.model.config)
    peak = matmul_peak(shape.gemm_shapes(2048), device=loaded.device)
    print(peak.describe(), flush=True)
    questions = read_questions(data / "questions.jsonl")
    documents = read_knowledge_base(data / "knowledge.jsonl")

    rows = []
    if args.questions > 0:
        short = spread(questions, args.questions)
        rows.append(
            run_workload(
                "short (cloze 0-shot)",
                loaded,
                peer,
                short,
                build_requests(short, PromptStyle.cloze),
                args.batch_size,
                peak,
            )
        )
    if args.rag_questions > 0:
        rag = spread(questions, args.rag_questions)
        requests = rag_requests(rag, documents, loaded.tokenizer, args.context_tokens)
        rows.append(
            run_workload(
                f"rag (~{args.context_tokens} tokens)",
                loaded,
                peer,
                rag,
                requests,
                args.batch_size,
                peak,
            )
        )

    print(markdown_table(rows))
    if args.out:
        report = {
            "model": loaded.checkpoint,
            "threads": args.threads,
            "device": args.device,
            "torch": torch.__version__,
            "machine": platform.platform(),
            "matmul_peak": asdict(peak),
            "rows": [asdict(r) for r in rows],
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

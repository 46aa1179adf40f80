"""The paper's study on one H200 and on 8 GPUs over SLURM, costed from FLOPs and an MFU.

Ovadia et al. (arXiv 2312.05934; /work/shared/PAPER.md): 3 models (Mistral-7B, Llama2-7B,
Orca2-7B) x 6 tasks (5 MMLU subjects at 0 and 5 shots, current events at 0) x base / RAG (K grid
1..5) / FT-reg / FT-par with 4 and 10 paraphrases / FT+RAG, plus kfr's newer arms QA-FT, distill
and RAFT. Training FLOPs are 6 x parameters x tokens (full fine-tuning, the paper's), scoring
FLOPs 2 x parameters x tokens; seconds = FLOPs / (MFU x the bf16 matmul peak). Every input is a
field of :class:`Inputs` with where it comes from, so a measured MFU (``benchmarks.gpu_bench``)
replaces an assumed one on the command line::

    python -m benchmarks.paper_cost [--mfu 0.3] [--scoring-mfu 0.3] [--kb-tokens 800000]

What is MEASURED (README "GPU check", one H200, 2026-12-04): the bf16 matmul peak (778-796
TFLOP/s) and kfr's fine-tuning rate at SmolLM2-135M's shape (1,083 tokens/s full, blocks of 128:
an MFU of 0.11%), which the "today" column extrapolates to 7B at that MFU. Everything else is
DERIVED: the paper gives no knowledge-base sizes, so each task's is kfr's Wikipedia preset
(``kfr-kb wikipedia --depth 1 --limit 200``: 200 articles) at an assumed 4,000 tokens a cleaned
article; prompt lengths, QA pairs per chunk, epochs and the 30% MFU are assumptions; the 8-GPU
time assumes the cells spread evenly over independent SLURM jobs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

MMLU_QUESTIONS = {  # test-split sizes of the paper's 5 subjects
    "anatomy": 135,
    "astronomy": 152,
    "college_biology": 144,
    "college_chemistry": 100,
    "prehistory": 324,
}


@dataclass
class Inputs:
    models: dict[str, float] = field(
        default_factory=lambda: {"Mistral-7B": 7.24e9, "Llama2-7B": 6.74e9, "Orca2-7B": 6.74e9}
    )
    tasks: dict[str, int] = field(  # questions per task
        default_factory=lambda: {**MMLU_QUESTIONS, "current_events": 910}
    )
    kb_tokens: float = 200 * 4000  # per task: 200 Wikipedia articles x 4,000 tokens (assumed)
    epochs: int = 5  # the paper: up to 5
    lr_trials: int = 1  # learning rates tried per fine-tuned cell (the paper searched a range)
    chunk_tokens: int = 256  # the paper's training blocks; also a retrieved chunk
    rag_ks: tuple[int, ...] = (1, 2, 3, 4, 5)  # the paper's K grid (K=0 is base)
    prompt_tokens: dict[int, int] = field(  # tokens a question costs at 0 / 5 shots (assumed)
        default_factory=lambda: {0: 120, 5: 700}
    )
    qa_pairs_per_chunk: int = 4  # QA-FT / distill / RAFT training examples (assumed)
    qa_tokens: int = 40  # a QA training example's prompt + answer (assumed)
    supervised_epochs: int = 3  # kfr's default for the supervised recipes
    raft_passages: int = 3  # golden + distractors before a RAFT / distill-teacher prompt
    peak_flops: float = 790e12  # measured: bf16 matmul on the H200, same runs
    mfu: float = 0.30  # assumed (the performance issue's target), fine-tuning
    scoring_mfu: float = 0.30  # assumed, scoring
    measured_mfu: float = 6 * 134.5e6 * 1083 / 790e12  # measured kfr today at SmolLM2 shape
    gpus: int = 8
    cell_overhead_s: float = 60.0  # start-up + loading a 7B model per cell (assumed)


def shots(task: str) -> tuple[int, ...]:
    return (0,) if task == "current_events" else (0, 5)


def arm_tokens(inp: Inputs, task: str, questions: int) -> dict[str, tuple[float, float, int]]:
    """Per arm of one (model, task): (trained tokens x 6 weight, scored tokens, cells).

    Trained tokens are returned as FLOP-weighted tokens per parameter / 2, i.e. such that
    FLOPs = 2 x N x (the first figure): training counts 3 (forward + backward), scoring 1.
    """
    kb = inp.kb_tokens
    scored = questions * sum(inp.prompt_tokens[s] for s in shots(task))
    rag = sum(
        questions * (inp.prompt_tokens[s] + k * inp.chunk_tokens)
        for s in shots(task)
        for k in inp.rag_ks
    )
    pairs = kb / inp.chunk_tokens * inp.qa_pairs_per_chunk
    raft_example = inp.raft_passages * inp.chunk_tokens + inp.qa_tokens
    train = 3 * inp.epochs * inp.lr_trials
    sup = 3 * inp.supervised_epochs * inp.lr_trials
    n_shots, n_k = len(shots(task)), len(inp.rag_ks)
    return {
        "base": (scored, 0.0, n_shots),
        "RAG (K=1..5)": (rag, 0.0, n_shots * n_k),
        "FT-reg": (scored, train * kb, n_shots),
        "FT-par, 4 paraphrases": (scored, train * kb * 5, n_shots),
        "FT-par, 10 paraphrases": (scored, train * kb * 11, n_shots),
        "FT+RAG (FT-reg's model)": (rag, 0.0, n_shots * n_k),
        "QA-FT": (scored, sup * pairs * inp.qa_tokens, n_shots),
        # the teacher reads each example once with passages (forward), the student trains
        "distill": (scored, pairs * raft_example + sup * pairs * inp.qa_tokens, n_shots),
        "RAFT": (scored, sup * pairs * raft_example, n_shots),
    }


@dataclass
class Row:
    arm: str
    cells: int
    train_flops: float
    score_flops: float

    def hours(self, inp: Inputs, mfu: float) -> float:
        seconds = self.train_flops / (mfu * inp.peak_flops)
        seconds += self.score_flops / (inp.scoring_mfu * inp.peak_flops)
        return (seconds + self.cells * inp.cell_overhead_s) / 3600


def cost_rows(inp: Inputs) -> list[Row]:
    rows: dict[str, Row] = {}
    for params in inp.models.values():
        for task, questions in inp.tasks.items():
            for arm, (scored, trained, cells) in arm_tokens(inp, task, questions).items():
                row = rows.setdefault(arm, Row(arm, 0, 0.0, 0.0))
                row.cells += cells
                row.train_flops += 2 * params * trained
                row.score_flops += 2 * params * scored
    return list(rows.values())


def markdown(inp: Inputs) -> str:
    rows = cost_rows(inp)
    total = Row("**whole grid**", sum(r.cells for r in rows), 0.0, 0.0)
    total.train_flops = sum(r.train_flops for r in rows)
    total.score_flops = sum(r.score_flops for r in rows)
    lines = [
        f"| arm (3 models x 6 tasks) | cells | training PFLOP | scoring PFLOP | one H200 at "
        f"{inp.mfu:.0%} MFU, h | {inp.gpus} GPUs (SLURM) at {inp.mfu:.0%}, h | one H200, "
        f"fine-tuning at today's measured {inp.measured_mfu:.2%} MFU, h |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in [*rows, total]:
        one = row.hours(inp, inp.mfu)
        lines.append(
            f"| {row.arm} | {row.cells} | {row.train_flops / 1e15:,.0f} | "
            f"{row.score_flops / 1e15:,.1f} | {one:,.1f} | {one / inp.gpus:,.1f} | "
            f"{row.hours(inp, inp.measured_mfu):,.0f} |"
        )
    longest = (
        max(
            2 * max(inp.models.values()) * trained
            for task, questions in inp.tasks.items()
            for _, trained, _ in arm_tokens(inp, task, questions).values()
        )
        / (inp.mfu * inp.peak_flops)
        / 3600
    )
    lines.append(
        f"\n{inp.gpus} GPUs: the cells spread evenly over independent SLURM jobs (the longest "
        f"single cell, FT-par with 10 paraphrases on one task, takes {longest:.1f} h); scoring "
        f"at {inp.scoring_mfu:.0%} MFU in every column; {inp.cell_overhead_s:.0f} s of start-up "
        "per cell."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Inputs()
    parser.add_argument("--mfu", type=float, default=defaults.mfu, help="fine-tuning MFU")
    parser.add_argument("--scoring-mfu", type=float, default=defaults.scoring_mfu)
    parser.add_argument("--kb-tokens", type=float, default=defaults.kb_tokens, help="per task")
    parser.add_argument("--peak-tflops", type=float, default=defaults.peak_flops / 1e12)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr-trials", type=int, default=defaults.lr_trials)
    parser.add_argument("--gpus", type=int, default=defaults.gpus)
    args = parser.parse_args(argv)
    inp = Inputs(
        mfu=args.mfu,
        scoring_mfu=args.scoring_mfu,
        kb_tokens=args.kb_tokens,
        peak_flops=args.peak_tflops * 1e12,
        epochs=args.epochs,
        lr_trials=args.lr_trials,
        gpus=args.gpus,
    )
    print(markdown(inp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

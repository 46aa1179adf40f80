"""What a question-generation run writes: the question set (JSONL) and its card, the rejects
file (every rejected candidate with its reason, for inspection), and the one-line summary of
the counts that the card holds."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from kfr.builders.questions.pipeline import GenerationResult
from kfr.builders.questions.prompts import PROMPT, PROMPT_VERSION, SIMPLE_PROMPT
from kfr.builders.questions.spec import QuestionSpec
from kfr.core.storage import atomic_write_jsonl
from kfr.data.cards import sha256_file, write_card
from kfr.data.questions import write_questions_jsonl

TOOL = "kfr.builders.questions"  # the package: recorded in cards


def write_rejects(path: str | Path, result: GenerationResult) -> None:
    atomic_write_jsonl(path, result.rejects)


def write_question_set(
    out: Path,
    result: GenerationResult,
    spec: QuestionSpec,
    *,
    knowledge: Path,
    knowledge_card: dict[str, Any] | None,
    generator: dict[str, Any],
    limit_chunks: int | None,
    leakage_filter: bool,
    rejects: Path | None = None,
) -> Path:
    """Write ``result``'s questions to ``out`` and its card (covering ``rejects`` too, when
    given); returns the card's path. ``generator`` is what the backend says about itself."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_questions_jsonl(out, result.questions)
    return write_card(
        out,
        kind="questions",
        tool=TOOL,
        source={
            "knowledge": str(knowledge),
            "knowledge_sha256": sha256_file(knowledge) if knowledge.is_file() else None,
            "knowledge_card": knowledge_card.get("card_path") if knowledge_card else None,
            "generator": generator,
        },
        settings={**asdict(spec), "limit_chunks": limit_chunks,
                  "leakage_filter": leakage_filter, "prompt_version": PROMPT_VERSION},
        counts=result.counts,
        extra_files=[rejects] if rejects else [],
        timings=result.timings,
        prompt=SIMPLE_PROMPT if spec.prompt_style == "simple" else PROMPT,
    )  # fmt: skip


def summary(counts: dict[str, Any]) -> str:
    """``N candidates; M requests without a usable reply; rejected: ...`` of a run's counts."""
    rejected = ", ".join(f"{n} {r}" for r, n in counts.get("rejected", {}).items() if n)
    failed = counts.get("json", {}).get("failed", 0)
    return f"{counts.get('candidates', 0)} candidates; {failed} requests without a usable reply" + (
        f"; rejected: {rejected}" if rejected else ""
    )


__all__ = ["TOOL", "summary", "write_question_set", "write_rejects"]

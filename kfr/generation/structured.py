"""Ask a generator for JSON, validate every answer, retry the ones that fail, count the rest.

Small models often wrap JSON in prose or code fences, or stop mid-object; :func:`extract_json`
takes the first JSON value found in the text, and the caller's ``parse(prompt index, value)``
decides whether its content is usable (raising ``ValueError`` when not). A prompt whose answers
keep failing is given up after ``retries`` more attempts and reported as ``None``, never as
made-up output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from kfr.generation.backend import TextGenerator

T = TypeVar("T")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (code fences allowed); ValueError if none."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start, char in enumerate(candidate):
            if char in "{[":
                try:
                    return decoder.raw_decode(candidate, start)[0]
                except json.JSONDecodeError:
                    continue
    raise ValueError("no JSON object or array in the answer")


@dataclass
class JsonStats:
    prompts: int = 0
    attempts: int = 0  # generations, retries included
    invalid_json: int = 0  # answers with no parseable JSON
    invalid_content: int = 0  # JSON that `parse` rejected
    failed: int = 0  # prompts given up after all retries

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def generate_json(
    generator: TextGenerator,
    prompts: Sequence[str],
    parse: Callable[[int, Any], T],
    *,
    retries: int,
    seed: int,
    prefill: str = "",
) -> tuple[list[T | None], JsonStats]:
    """``parse(i, json)`` of prompt i's answer; failed prompts are asked again with new seeds."""
    results: list[T | None] = [None] * len(prompts)
    stats = JsonStats(prompts=len(prompts))
    pending = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not pending:
            break
        # Passed only when set: generators that cannot start an answer (a chat API) omit it.
        extra = {"prefill": prefill} if prefill else {}
        answers = generator.generate(
            [prompts[i] for i in pending], seed=seed + 7919 * attempt, **extra
        )
        stats.attempts += len(pending)
        still = []
        for index, answer in zip(pending, answers, strict=True):
            try:
                value = extract_json(answer)
            except ValueError:
                stats.invalid_json += 1
                still.append(index)
                continue
            try:
                results[index] = parse(index, value)
            except ValueError:
                stats.invalid_content += 1
                still.append(index)
        pending = still
    stats.failed = len(pending)
    return results, stats

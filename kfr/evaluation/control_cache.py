"""The control set and the base model's answers, computed once per sweep and cached.

A cell that fine-tunes compares itself with its base model twice: on the control set
(forgetting, :mod:`kfr.evaluation.forgetting`) and per SliCK category of the evaluation
questions (:mod:`kfr.evaluation.known`). Both need the *base* model's answers, which are the same
for every cell of a sweep, so they are built once under the cache, keyed by ``base_identity`` (a
string naming the base weights, e.g. a digest of the model's weight settings), the questions'
content and the settings that change them:

- ``<cache>/control/embedded-<key>/``: the embedded control set (:mod:`kfr.data.control`)
  filtered by the base model's confidence, ``questions.jsonl`` + ``questions.card.json``;
- ``<cache>/control/base-<key>/base_correct.json``: the base model's per-question correctness on
  a control set;
- ``<cache>/known/<key>/``: SliCK categories (``categories.json``) and the per-prompt choice
  distributions they come from (``probabilities.json``).

The control set is always scored 0-shot cloze (:func:`score_control`), as the embedded set is
filtered, whatever ``eval.style`` and ``eval.shots`` the cell evaluates with. Wherever a base
model is taken, a zero-argument callable that loads it may be given instead: it is called only
when the cache misses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.identity import digest
from kfr.core.schema import EvalConfig, PromptStyle
from kfr.core.storage import atomic_write_json, build_directory_once
from kfr.data.cards import card_path, find_card, questions_digest, write_card
from kfr.data.control import (
    QUESTIONS_FILE,
    build_control_questions,
    control_settings,
    package_versions,
)
from kfr.data.questions import read_questions, write_questions_jsonl
from kfr.data.schema import Question
from kfr.evaluation.known import (
    KNOWN_SHOTS,
    ScoringModel,
    category_counts,
    choice_probabilities,
    confident_subset,
    slick_categories,
)
from kfr.evaluation.metrics import Prediction, predict
from kfr.evaluation.prompts import build_requests

EMBEDDED = "embedded"
CONTROL_SEED = 0  # the embedded set's distractor seed
CACHE_VERSION = 1  # bump when what is cached changes for the same key
BASE_CORRECT_FILE = "base_correct.json"
CATEGORIES_FILE = "categories.json"
PROBABILITIES_FILE = "probabilities.json"
_OFF = {"", "none", "null"}

BaseModel = ScoringModel | Callable[[], ScoringModel]


def _model(base: BaseModel) -> ScoringModel:
    return base if hasattr(base, "loglikelihood") else base()  # type: ignore[operator]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def score_control(
    lm: ScoringModel,
    questions: Sequence[Question],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> list[Prediction]:
    """The model's predictions on control questions (0-shot cloze; ``correct`` is ``acc``)."""
    requests = build_requests(questions, PromptStyle.cloze)
    scores, _ = lm.loglikelihood(requests, batch_size=batch_size, progress=progress)
    return predict(questions, scores, [r.choice_lengths for r in requests])


def control_source(eval_cfg: EvalConfig) -> str | None:
    """``"embedded"``, a questions file's path, or None (``eval.control`` null / "none")."""
    control = eval_cfg.control
    if control is None or str(control).strip().lower() in _OFF:
        return None
    return str(control).strip()


def _check_confidence(min_prob: float) -> None:
    if not 0.0 <= float(min_prob) <= 1.0:
        raise UserError(
            f"expected a probability between 0 and 1, got {min_prob}",
            field="eval.control_confidence",
        )


def _embedded_set(
    eval_cfg: EvalConfig, base: BaseModel, base_identity: str, cache_dir: Path
) -> tuple[list[Question], dict[str, Any]]:
    min_prob = float(eval_cfg.control_confidence)
    _check_confidence(min_prob)
    settings = {
        **control_settings(CONTROL_SEED),
        "min_prob": min_prob,
        "filter": "0-shot cloze: argmax correct and normalised P(correct) >= min_prob",
    }
    key = digest(
        {
            "version": CACHE_VERSION,
            "base": base_identity,
            "packages": package_versions(),
            "settings": settings,
        }
    )

    def build(tmp: Path) -> None:
        candidates = build_control_questions(CONTROL_SEED)
        kept, counts = confident_subset(
            _model(base),
            candidates,
            min_prob,
            batch_size=eval_cfg.batch_size,
            progress=eval_cfg.progress,
        )
        if not kept:
            raise UserError(
                f"the base model answers none of the {len(candidates)} embedded control "
                f"questions with P(correct) >= {min_prob}: lower eval.control_confidence, point "
                "eval.control at a questions file, or set it to null",
                field="eval.control",
            )
        path = tmp / QUESTIONS_FILE
        write_questions_jsonl(path, kept)
        write_card(
            path,
            kind="questions",
            tool="kfr.evaluation.control_cache",
            source={"packages": package_versions(), "base_model": base_identity},
            settings=settings,
            counts=counts,
        )

    directory = build_directory_once(cache_dir / "control" / f"{EMBEDDED}-{key}", build)
    path = directory / QUESTIONS_FILE
    questions = read_questions(path)
    card = card_path(path)
    counts = _read_json(card)["counts"]
    return questions, {
        "source": EMBEDDED,
        "path": str(path),
        "card": str(card),
        "n": len(questions),
        "candidates": counts["candidates"],
        "min_prob": min_prob,
        "per_subject": counts["per_subject"],
        "questions_sha256": questions_digest(questions),
    }


def ensure_control_set(
    eval_cfg: EvalConfig, lm: BaseModel, base_identity: str, cache_dir: str | Path
) -> tuple[list[Question], dict[str, Any]] | None:
    """The control questions ``eval.control`` names, with what to record about them; None when
    it is off.

    ``"embedded"``: the candidates of :mod:`kfr.data.control` the *base* model ``lm`` answers
    with P(correct) >= ``eval.control_confidence`` (built once per ``base_identity`` and cached;
    an empty result is a :class:`~kfr.core.errors.UserError`). A path: that questions file as it
    is, unfiltered.
    """
    source = control_source(eval_cfg)
    if source is None:
        return None
    if source == EMBEDDED:
        return _embedded_set(eval_cfg, lm, base_identity, Path(cache_dir))
    questions = read_questions(source)
    card = find_card(source)
    return questions, {
        "source": source,
        "path": str(source),
        "card": None if card is None else str(card),
        "n": len(questions),
        "questions_sha256": questions_digest(questions),
    }


def cached_base_correct(
    lm: BaseModel,
    questions: Sequence[Question],
    eval_cfg: EvalConfig,
    base_identity: str,
    cache_dir: str | Path,
) -> list[bool]:
    """The base model's correctness on each control question (in the order given), scored by
    :func:`score_control` once per (``base_identity``, questions) and cached."""
    questions_sha = questions_digest(questions)
    key = digest(
        {"version": CACHE_VERSION, "base": base_identity, "questions": questions_sha, "prompt": 0}
    )

    def build(tmp: Path) -> None:
        predictions = score_control(
            _model(lm), questions, batch_size=eval_cfg.batch_size, progress=eval_cfg.progress
        )
        correct = {p.question.id: p.correct for p in predictions}
        atomic_write_json(
            tmp / BASE_CORRECT_FILE,
            {
                "base_model": base_identity,
                "questions_sha256": questions_sha,
                "prompt": "0-shot cloze",
                "acc": sum(correct.values()) / len(correct) if correct else None,
                "correct": correct,
            },
        )

    directory = build_directory_once(Path(cache_dir) / "control" / f"base-{key}", build)
    correct = _read_json(directory / BASE_CORRECT_FILE)["correct"]
    return [bool(correct[q.id]) for q in questions]


def cached_categories(
    lm: BaseModel,
    questions: Sequence[Question],
    eval_cfg: EvalConfig,
    base_identity: str,
    cache_dir: str | Path,
    *,
    pool: Sequence[Question] | None = None,
) -> dict[str, str] | None:
    """``{question id: SliCK category}`` from the base model over ``eval.known_prompts`` few-shot
    prompts (examples from ``pool``, None: from ``questions`` themselves, seeded by
    ``eval.fewshot_seed``), computed once per (``base_identity``, questions, pool, settings) and
    cached; None when ``eval.known_prompts`` is 0."""
    prompts = int(eval_cfg.known_prompts)
    if prompts < 0:
        raise UserError(f"expected 0 (off) or more, got {prompts}", field="eval.known_prompts")
    if prompts == 0:
        return None
    settings = {
        "prompts": prompts,
        "shots": KNOWN_SHOTS,
        "seed": eval_cfg.fewshot_seed,
        "style": PromptStyle.cloze.value,
    }
    questions_sha = questions_digest(questions)
    key = digest(
        {
            "version": CACHE_VERSION,
            "base": base_identity,
            "questions": questions_sha,
            "pool": None if pool is None else questions_digest(pool),
            "settings": settings,
        }
    )

    def build(tmp: Path) -> None:
        distributions = choice_probabilities(
            _model(lm),
            questions,
            prompts=prompts,
            pool=pool,
            seed=eval_cfg.fewshot_seed,
            shots=KNOWN_SHOTS,
            batch_size=eval_cfg.batch_size,
            progress=eval_cfg.progress,
        )
        categories = slick_categories(distributions, questions)
        atomic_write_json(tmp / PROBABILITIES_FILE, distributions)
        atomic_write_json(
            tmp / CATEGORIES_FILE,
            {
                "base_model": base_identity,
                "questions_sha256": questions_sha,
                "settings": settings,
                "counts": category_counts(categories),
                "categories": categories,
            },
        )

    directory = build_directory_once(Path(cache_dir) / "known" / key, build)
    categories = _read_json(directory / CATEGORIES_FILE)["categories"]
    return {q.id: categories[q.id] for q in questions}


__all__ = [
    "EMBEDDED",
    "BaseModel",
    "cached_base_correct",
    "cached_categories",
    "control_source",
    "ensure_control_set",
    "score_control",
]

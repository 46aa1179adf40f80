"""The control set and the base model's answers, computed once per sweep and cached.

A cell that fine-tunes compares itself with its base model twice: on the control set
(forgetting, :mod:`kfr.evaluation.forgetting`) and per SliCK category of the evaluation
questions (:mod:`kfr.evaluation.known`). Both need the *base* model's answers, which are the same
for every cell of a sweep, so they are built once under the cache, keyed by ``base_identity`` (a
string naming the base weights, e.g. a digest of the model's weight settings), the questions'
content and the settings that change them:

- ``<cache>/control/embedded-<key>/``: the embedded control set (:mod:`kfr.data.control`)
  filtered by the base model's confidence, ``questions.jsonl`` + ``questions.card.json``;
- ``<cache>/control/base-<key>/``: the base model's per-question correctness and log P(correct
  answer) on a control set (``base_scores.json``), and its next-token distribution at the end of
  each control prompt, top-k + tail (``next_token.npz``, :mod:`kfr.evaluation.forgetting`);
- ``<cache>/known/<key>/``: SliCK categories (``categories.json``) and the per-prompt choice
  distributions they come from (``probabilities.json``).

The control set is always scored 0-shot cloze (:func:`score_control`), as the embedded set is
filtered, whatever ``eval.style`` and ``eval.shots`` the cell evaluates with. Wherever a base
model is taken, a zero-argument callable that loads it may be given instead: it is called only
when the cache misses. :func:`compare_control` is what a fine-tuned cell runs: the base's side
from the cache, its own side (one scoring pass and one forward over the control prompts), and
the forgetting metrics with their per-question records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from kfr.evaluation.forgetting import (
    CONTROL_TOP_K,
    TopK,
    control_shift,
    forgetting,
    next_token_kl,
    next_token_top_k,
)
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
# The base's control scores: 2 added log P and the next-token top-k (version 1 held correctness
# alone, as base_correct.json; its entries are never read again).
BASE_SCORES_VERSION = 2
BASE_SCORES_FILE = "base_scores.json"
NEXT_TOKEN_FILE = "next_token.npz"
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


@dataclass(frozen=True)
class BaseControl:
    """The base model on a control set, in the questions' order: correctness, log P(correct
    answer) and (when asked for) the coarsened next-token distributions at the prompts' ends."""

    correct: list[bool]
    logp: list[float]
    next_token: TopK | None


def cached_base_control(
    lm: BaseModel,
    questions: Sequence[Question],
    eval_cfg: EvalConfig,
    base_identity: str,
    cache_dir: str | Path,
    *,
    top_k: int = CONTROL_TOP_K,
) -> BaseControl:
    """The base model's side of :func:`compare_control`, scored by :func:`score_control` (and,
    when ``top_k`` > 0, one forward over the prompts, which needs the model's weights) once per
    (``base_identity``, questions, ``top_k``) and cached."""
    questions_sha = questions_digest(questions)
    key = digest(
        {
            "version": CACHE_VERSION,
            "scores": BASE_SCORES_VERSION,
            "base": base_identity,
            "questions": questions_sha,
            "prompt": 0,
            "top_k": top_k,
        }
    )

    def build(tmp: Path) -> None:
        model = _model(lm)
        predictions = score_control(
            model, questions, batch_size=eval_cfg.batch_size, progress=eval_cfg.progress
        )
        correct = {p.question.id: p.correct for p in predictions}
        atomic_write_json(
            tmp / BASE_SCORES_FILE,
            {
                "base_model": base_identity,
                "questions_sha256": questions_sha,
                "prompt": "0-shot cloze",
                "acc": sum(correct.values()) / len(correct) if correct else None,
                "correct": correct,
                "logp": {p.question.id: p.loglikelihoods[p.question.answer] for p in predictions},
                "top_k": top_k,
            },
        )
        if top_k > 0:
            top = next_token_top_k(model, questions, k=top_k, batch_size=eval_cfg.batch_size)
            top.save(tmp / NEXT_TOKEN_FILE)

    directory = build_directory_once(Path(cache_dir) / "control" / f"base-{key}", build)
    scores = _read_json(directory / BASE_SCORES_FILE)
    return BaseControl(
        correct=[bool(scores["correct"][q.id]) for q in questions],
        logp=[float(scores["logp"][q.id]) for q in questions],
        next_token=TopK.load(directory / NEXT_TOKEN_FILE) if top_k > 0 else None,
    )


def cached_base_correct(
    lm: BaseModel,
    questions: Sequence[Question],
    eval_cfg: EvalConfig,
    base_identity: str,
    cache_dir: str | Path,
) -> list[bool]:
    """The base model's correctness on each control question (in the order given), scored by
    :func:`score_control` once per (``base_identity``, questions) and cached; any
    :class:`~kfr.evaluation.known.ScoringModel` will do (no next-token distributions)."""
    return cached_base_control(lm, questions, eval_cfg, base_identity, cache_dir, top_k=0).correct


def compare_control(
    base: BaseModel,
    lm: Any,
    questions: Sequence[Question],
    eval_cfg: EvalConfig,
    base_identity: str,
    cache_dir: str | Path,
    *,
    top_k: int = CONTROL_TOP_K,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A fine-tuned cell ``lm`` against its base on the control set: the metrics of
    :func:`~kfr.evaluation.forgetting.forgetting` and
    :func:`~kfr.evaluation.forgetting.control_shift`, and one record per question
    (``id``, ``base_correct``, ``correct``, ``base_logp``, ``logp``, ``kl``) for the report's
    bootstrap over seeds and questions. ``top_k`` = 0: no KL (``kl`` null)."""
    side = cached_base_control(base, questions, eval_cfg, base_identity, cache_dir, top_k=top_k)
    cell = score_control(lm, questions, batch_size=eval_cfg.batch_size, progress=False)
    correct = [p.correct for p in cell]
    logp = [p.loglikelihoods[p.question.answer] for p in cell]
    kl = None
    if side.next_token is not None:
        kl = next_token_kl(lm, questions, side.next_token, batch_size=eval_cfg.batch_size)
    bootstrap = {"samples": eval_cfg.bootstrap_samples, "seed": eval_cfg.bootstrap_seed}
    metrics = forgetting(side.correct, correct, **bootstrap)
    metrics.update(control_shift(side.logp, logp, kl, **bootstrap))
    records = [
        {
            "id": question.id,
            "base_correct": side.correct[i],
            "correct": correct[i],
            "base_logp": side.logp[i],
            "logp": logp[i],
            "kl": None if kl is None else float(kl[i]),
        }
        for i, question in enumerate(questions)
    ]
    return metrics, records


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
    "BaseControl",
    "BaseModel",
    "cached_base_control",
    "cached_base_correct",
    "cached_categories",
    "compare_control",
    "control_source",
    "ensure_control_set",
    "score_control",
]

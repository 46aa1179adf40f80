"""Questions -> scoring requests, with LM-Evaluation-Harness's prompt conventions.

cloze:  context ``"Question: {question}\\nAnswer:"``, continuations ``" {choice}"``.
letter: MMLU as in lm-eval, ``"The following are multiple choice questions (with answers) about
        {subject}.\\n\\n"`` + few-shot examples + ``"{question}\\nA. ..\\nB. ..\\nAnswer:"``,
        continuations ``" A"``, ``" B"``, ...
Few-shot examples end with ``" {target}"`` and are joined by blank lines. Retrieved passages,
when given, are joined by blank lines and placed before everything else.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kfr.core.errors import UserError
from kfr.core.schema import PromptStyle
from kfr.data.records import Where
from kfr.data.schema import Question

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class ChoiceRequest:
    """Everything needed to score one question: a shared context and one continuation per choice.

    ``choice_lengths`` are the character counts lm-eval divides by for ``acc_norm``: the length
    of the choice as listed (the choice text for cloze, the letter for letter style), without the
    leading delimiter.
    """

    question_id: str
    context: str
    continuations: tuple[str, ...]
    choice_lengths: tuple[int, ...]
    # Where the question was read from (file:line), for messages about it; not compared.
    where: Where | None = field(default=None, compare=False, repr=False, kw_only=True)

    def error(self, message: str, field: str) -> UserError:
        """A problem with this question, at its file:line when it was read from a file."""
        text = f"question {self.question_id}: {message}"
        return self.where.error(text, field) if self.where else UserError(text, field=field)


def check_style_limits(
    questions: Iterable[Question], style: PromptStyle, *, source: str | None = None
) -> None:
    """Every limit a prompt style puts on a question, checked when the questions are read (a
    cell checks its questions, few-shot pool and probes before any model loads): one
    :class:`UserError` naming the question's file:line (``source`` for questions made in code).

    letter: a choice is labelled by one letter, so at most 26 choices (A-Z)."""
    if style != PromptStyle.letter:
        return
    for question in questions:
        if len(question.choices) > len(LETTERS):
            where = question.where or Where(source or "questions")
            raise where.error(
                f"question '{question.id}' has {len(question.choices)} choices, but "
                f"eval.style=letter labels at most {len(LETTERS)} (A-Z); use eval.style=cloze",
                "choices",
            )


def _letter_body(question: Question) -> str:
    options = "".join(f"{LETTERS[i]}. {choice}\n" for i, choice in enumerate(question.choices))
    return f"{question.question.strip()}\n{options}Answer:"


def _cloze_body(question: Question) -> str:
    return f"Question: {question.question}\nAnswer:"


def _choice_labels(question: Question, style: PromptStyle) -> list[str]:
    if style == PromptStyle.letter:
        return [LETTERS[i] for i in range(len(question.choices))]
    return list(question.choices)


def _body(question: Question, style: PromptStyle) -> str:
    return _letter_body(question) if style == PromptStyle.letter else _cloze_body(question)


def _example(question: Question, style: PromptStyle) -> str:
    target = _choice_labels(question, style)[question.answer]
    return _body(question, style) + TARGET_DELIMITER + target


def _description(question: Question, style: PromptStyle, description: str | None) -> str:
    if description is not None:
        return description.format(subject=(question.subject or "").replace("_", " "))
    if style != PromptStyle.letter:
        return ""
    if question.subject:
        subject = question.subject.replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return "The following are multiple choice questions (with answers).\n\n"


def select_fewshot(
    question: Question,
    shots: int,
    pool: Sequence[Question],
    *,
    pool_is_eval_set: bool,
    seed: int,
) -> list[Question]:
    """Pick ``shots`` examples for ``question``, deterministically.

    A separate pool (MMLU's dev split) gives its first ``shots`` questions of the same subject,
    as lm-eval's ``first_n`` sampler does; where the subject has fewer, the first ``shots`` of
    the whole pool (any subject). When examples must come from the evaluated set itself,
    they are drawn at random, excluding the question, with a generator seeded by ``seed`` and the
    question's id, so the choice does not depend on question order.

    Never more examples than the pool holds (less the question itself): a cell checks
    :func:`check_fewshot` first, so that it never asks for more.
    """
    if shots <= 0:
        return []
    same_subject = [q for q in pool if q.subject == question.subject and q.id != question.id]
    candidates = (
        same_subject if len(same_subject) >= shots else [q for q in pool if q.id != question.id]
    )
    if not pool_is_eval_set:
        return list(candidates[:shots])
    rng = random.Random(f"{seed}:{question.id}")
    candidates = sorted(candidates, key=lambda q: q.id)  # independent of file order
    return rng.sample(candidates, min(shots, len(candidates)))


def fewshot_capacity(questions: Sequence[Question], pool: Sequence[Question] | None) -> int:
    """The most few-shot examples every question of ``questions`` can get from ``pool`` (None:
    from ``questions`` themselves): the pool's size, less the question itself where the pool
    holds it."""
    if pool is None:
        return max(0, len(questions) - 1)
    pool_ids = {q.id for q in pool}
    return len(pool) - (1 if any(q.id in pool_ids for q in questions) else 0)


def check_fewshot(
    shots: int,
    questions: Sequence[Question],
    pool: Sequence[Question] | None,
    *,
    questions_label: str,
    pool_label: str | None,
    field: str = "eval.shots",
    asked: str | None = None,
) -> None:
    """A :class:`UserError` naming ``field`` when ``shots`` examples per question cannot be had:
    prompts with fewer examples than their label says would be scored otherwise.

    ``questions_label`` / ``pool_label`` say where the questions and the pool come from (a file,
    a dataset), ``asked`` what asks for the examples, for the message."""
    capacity = fewshot_capacity(questions, pool)
    if shots <= capacity:
        return
    if pool is None:
        where = f"{questions_label} has only {len(questions)} questions and no few-shot pool"
    else:
        where = f"the few-shot pool {pool_label} has only {len(pool)} questions"
    raise UserError(
        f"{asked or f'{shots} few-shot examples asked for'}, but {where} (at most {capacity} "
        "usable)",
        field=field,
    )


def build_context(
    question: Question,
    style: PromptStyle,
    examples: Sequence[Question] = (),
    *,
    description: str | None = None,
    passages: Sequence[str] = (),
) -> str:
    parts = [_example(example, style) for example in examples] + [_body(question, style)]
    prompt = _description(question, style, description) + FEWSHOT_DELIMITER.join(parts)
    if passages:
        prompt = FEWSHOT_DELIMITER.join(passages) + FEWSHOT_DELIMITER + prompt
    return prompt


def build_requests(
    questions: Sequence[Question],
    style: PromptStyle,
    *,
    shots: int = 0,
    fewshot_pool: Sequence[Question] | None = None,
    fewshot_seed: int = 1234,
    description: str | None = None,
    passages: Mapping[str, Sequence[str]] | None = None,
) -> list[ChoiceRequest]:
    """One request per question, in the order given."""
    pool = fewshot_pool if fewshot_pool is not None else questions
    check_style_limits(questions, style)
    if shots > 0 and fewshot_pool is not None:
        check_style_limits(fewshot_pool, style)
    requests = []
    for question in questions:
        examples = select_fewshot(
            question, shots, pool, pool_is_eval_set=fewshot_pool is None, seed=fewshot_seed
        )
        context = build_context(
            question,
            style,
            examples,
            description=description,
            passages=(passages or {}).get(question.id, ()),
        )
        labels = _choice_labels(question, style)
        requests.append(
            ChoiceRequest(
                question_id=question.id,
                context=context,
                continuations=tuple(TARGET_DELIMITER + label for label in labels),
                choice_lengths=tuple(len(label) for label in labels),
                where=question.where,
            )
        )
    return requests

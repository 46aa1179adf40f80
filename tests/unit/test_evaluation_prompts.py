"""Prompt strings must match LM-Evaluation-Harness's conventions character for character."""

from __future__ import annotations

from kfr.core.schema import PromptStyle
from kfr.data.schema import Question
from kfr.evaluation.prompts import build_context, build_requests, select_fewshot


def _q(i: int, subject: str | None = "anatomy", answer: int = 0) -> Question:
    return Question(
        id=f"q{i}",
        question=f" What is {i}? ",
        choices=(f"a{i}", f"b{i}", f"c{i}", f"d{i}"),
        answer=answer,
        subject=subject,
    )


def test_cloze_zero_shot():
    (request,) = build_requests([_q(1)], PromptStyle.cloze)
    assert request.context == "Question:  What is 1? \nAnswer:"
    assert request.continuations == (" a1", " b1", " c1", " d1")
    assert request.choice_lengths == (2, 2, 2, 2)


def test_letter_zero_shot_is_mmlu_layout():
    (request,) = build_requests([_q(1, subject="college_biology")], PromptStyle.letter)
    assert request.context == (
        "The following are multiple choice questions (with answers) about college biology.\n\n"
        "What is 1?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer:"
    )
    assert request.continuations == (" A", " B", " C", " D")
    assert request.choice_lengths == (1, 1, 1, 1)


def test_letter_few_shot_from_dev_pool_takes_first_n_of_subject():
    dev = [_q(10, answer=2), _q(11, subject="other"), _q(12, answer=1), _q(13)]
    (request,) = build_requests([_q(1)], PromptStyle.letter, shots=2, fewshot_pool=dev)
    assert request.context == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "What is 10?\nA. a10\nB. b10\nC. c10\nD. d10\nAnswer: C\n\n"
        "What is 12?\nA. a12\nB. b12\nC. c12\nD. d12\nAnswer: B\n\n"
        "What is 1?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer:"
    )


def test_cloze_few_shot_example_ends_with_correct_choice():
    context = build_context(_q(1), PromptStyle.cloze, [_q(2, answer=3)])
    assert context == "Question:  What is 2? \nAnswer: d2\n\nQuestion:  What is 1? \nAnswer:"


def test_passages_go_before_everything_joined_by_blank_lines():
    context = build_context(_q(1), PromptStyle.letter, passages=["P one.", "P two."])
    assert context.startswith("P one.\n\nP two.\n\nThe following are multiple choice")


def test_fewshot_from_eval_set_excludes_question_and_is_order_independent():
    questions = [_q(i) for i in range(20)]
    target = questions[7]
    picked = select_fewshot(target, 5, questions, pool_is_eval_set=True, seed=1234)
    assert len(picked) == 5 and target not in picked
    from_reversed = select_fewshot(target, 5, questions[::-1], pool_is_eval_set=True, seed=1234)
    assert [q.id for q in from_reversed] == [q.id for q in picked]
    subset = select_fewshot(target, 5, questions[:15], pool_is_eval_set=True, seed=1234)
    assert len(subset) == 5 and target not in subset
    other_seed = select_fewshot(target, 5, questions, pool_is_eval_set=True, seed=99)
    assert [q.id for q in other_seed] != [q.id for q in picked]


def test_fewshot_prefers_same_subject():
    pool = [_q(1, subject="x"), _q(2, subject="y"), _q(3, subject="y"), _q(4, subject="x")]
    picked = select_fewshot(_q(9, subject="y"), 2, pool, pool_is_eval_set=False, seed=0)
    assert [q.id for q in picked] == ["q2", "q3"]


def test_description_override_formats_subject():
    (request,) = build_requests([_q(1)], PromptStyle.cloze, description="About {subject}:\n")
    assert request.context.startswith("About anatomy:\nQuestion:")

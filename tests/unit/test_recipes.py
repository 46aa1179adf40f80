"""The new arms' training data on tiny data: QA examples scored as evaluated, RAFT's gold and
distractor mix, the distillation teacher's targets and loss, and each arm end to end on the tiny
model."""

from __future__ import annotations

import math

import pytest
import torch

from kfr.core.errors import UserError
from kfr.core.schema import PromptStyle
from kfr.data.schema import QaPair, Question
from kfr.evaluation.loglikelihood import split_tokens
from kfr.evaluation.prompts import build_requests
from kfr.finetune.distill import compute_teacher_targets
from kfr.finetune.examples import (
    IGNORE,
    ExampleData,
    TrainingExample,
    collate,
    encode_example,
    mix_documents,
    qa_example,
    qa_prompt,
)
from kfr.finetune.module import CausalLMModule
from kfr.finetune.recipes import raft_examples
from kfr.retrieval.chunking import Chunk
from tests.conftest import compose_config

PAIRS = [
    QaPair(f"p{i}", f"d{i}", f"Where did Velorin number {i} grow up?", f"Marrowvale {i}")
    for i in range(10)
]
CHUNKS = [
    Chunk(f"d{i}", 0, f"Velorin number {i} grew up in Marrowvale {i}.", None, 0, 40)
    for i in range(10)
] + [Chunk(f"d{i}", 1, f"Velorin number {i} liked tea.", None, 40, 70) for i in range(10)]


def test_a_qa_example_is_the_evaluation_prompt_and_answer():
    question = Question("q", "Where did Velorin number 3 grow up?", ("Oslo", "Marrowvale 3"), 1)
    (request,) = build_requests([question], PromptStyle.cloze)
    example = qa_example(PAIRS[3])
    assert example.context == request.context
    assert example.target == request.continuations[1]
    with_passages = qa_example(PAIRS[3], ["A passage."])
    assert with_passages.context == "A passage.\n\n" + request.context


def test_only_the_answer_tokens_are_trained(tiny_lm):
    tokenizer = tiny_lm.tokenizer
    example = qa_example(PAIRS[0])
    encoded = encode_example(tokenizer, example, max_length=512)
    context, target = split_tokens(tokenizer, example.context, example.target)
    assert encoded.input_ids == context + target
    assert encoded.labels == [IGNORE] * len(context) + target
    assert encoded.target_start == len(context)
    # Cut from the left: the answer survives a tiny context window.
    short = encode_example(tokenizer, example, max_length=len(target) + 2)
    assert short.input_ids[-len(target) :] == target and len(short.input_ids) == len(target) + 2
    document = encode_example(tokenizer, TrainingExample(document="Some text."), 512)
    assert document.labels == document.input_ids  # documents are trained on whole


def test_documents_are_mixed_in_by_ratio():
    examples = [qa_example(p) for p in PAIRS[:4]]
    mixed = mix_documents(examples, ["doc a", "doc b", "doc c"], 0.5)
    assert len(mixed) == 6 and [m.document for m in mixed[4:]] == ["doc a", "doc b"]
    with pytest.raises(UserError, match="documents_ratio"):
        mix_documents(examples, [], 1.0)


def test_raft_prompts_mix_gold_and_distractors(tiny_lm):
    examples, stats = raft_examples(PAIRS, CHUNKS, 2, 0.3, seed=0)
    again, _ = raft_examples(PAIRS, CHUNKS, 2, 0.3, seed=0)
    assert examples == again  # deterministic
    gold_prompts = 0
    for pair, example in zip(PAIRS, examples, strict=True):
        passages = example.context.split("\n\n")[:-1]
        assert len(passages) == 2
        has_gold = any(pair.answer in p for p in passages)
        gold_prompts += has_gold
        assert example.target == " " + pair.answer
        for passage in passages:
            if pair.answer not in passage:  # a distractor: another document's chunk
                assert f"number {pair.doc_id[1:]} " not in passage
    assert stats["raft_prompts_without_gold"] == len(PAIRS) - gold_prompts
    assert 0 < stats["raft_prompts_without_gold"] < len(PAIRS)
    none, _ = raft_examples(PAIRS, CHUNKS, 1, 0.0, seed=1)
    assert all(p.answer in e.context for p, e in zip(PAIRS, none, strict=True))
    with pytest.raises(UserError, match=r"retriever\.k"):
        raft_examples(PAIRS, CHUNKS, 0, 0.2, seed=0)
    # 18 chunks of other documents: 19 distractors cannot be drawn, and fewer are never used.
    with pytest.raises(UserError, match=r"retriever\.k=20 chunks, but only 18 chunks"):
        raft_examples(PAIRS, CHUNKS, 20, 0.0, seed=0)


def _distill_examples() -> list[TrainingExample]:
    return [
        TrainingExample(
            qa_prompt(p.question), " " + p.answer, qa_prompt(p.question, [CHUNKS[i].text])
        )
        for i, p in enumerate(PAIRS[:3])
    ]


def test_teacher_targets_are_the_teachers_top_k_on_the_answer_tokens(tiny_lm):
    examples = _distill_examples()
    targets = compute_teacher_targets(tiny_lm, examples, top_k=5, batch_size=2, progress=False)
    tokenizer = tiny_lm.tokenizer
    for example, target in zip(examples, targets, strict=True):
        context, answer = split_tokens(tokenizer, example.teacher_context, example.target)
        assert target["teacher_ids"].shape == (len(answer), 5)
        ids = torch.tensor([context + answer])
        with torch.no_grad():
            logp = tiny_lm.model(ids).logits[0].log_softmax(-1)
        expected = logp[len(context) - 1 : len(context) + len(answer) - 1].topk(5, dim=-1)
        torch.testing.assert_close(target["teacher_logprobs"], expected.values, atol=1e-4, rtol=0)
        assert torch.equal(target["teacher_ids"], expected.indices)


def _distill_batch(lm, examples, peaked: bool = False) -> dict:
    targets = compute_teacher_targets(lm, examples, top_k=8, progress=False)
    items = []
    for example, target in zip(examples, targets, strict=True):
        encoded = encode_example(lm.tokenizer, example, 512)
        if peaked:  # a teacher sure of its first token: all its probability there
            logprobs = torch.full_like(target["teacher_logprobs"], -torch.inf)
            logprobs[:, 0] = 0.0
            target = {**target, "teacher_logprobs": logprobs}
        items.append(
            {
                "input_ids": encoded.input_ids,
                "labels": encoded.labels,
                "target_start": encoded.target_start,
                **target,
            }
        )
    return collate(items, pad_id=0)


def test_distillation_loss_is_zero_when_the_student_is_the_teacher(tiny_lm):
    # Student context = teacher context: the student's distributions are the teacher's.
    same = [
        TrainingExample(e.teacher_context, e.target, e.teacher_context) for e in _distill_examples()
    ]
    module = CausalLMModule(tiny_lm.model, lr=1e-3)
    with torch.no_grad():
        matched = float(module._distillation_loss(_distill_batch(tiny_lm, same)))
        # KL(one-hot || student) = -log q(token): a random model is far from sure of anything.
        peaked = float(module._distillation_loss(_distill_batch(tiny_lm, same, peaked=True)))
    assert matched == pytest.approx(0.0, abs=1e-4)
    assert peaked > 1.0 and math.isfinite(peaked)


def test_example_batches_are_padded_and_the_order_is_drawn_per_epoch(tiny_lm):
    data = ExampleData([qa_example(p) for p in PAIRS], seed=3)
    data.connect(tiny_lm.tokenizer, batch_size=4, max_length=512)
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    padded = batch["attention_mask"] == 0
    assert (batch["labels"][padded] == IGNORE).all()
    assert data.epoch_order(0) != data.epoch_order(1)
    assert sorted(data.epoch_order(0)) == list(range(len(PAIRS)))


TINY = [
    "model=tiny_llama",
    "data.novel_facts.n_entities=6",
    "finetune.epochs=1",
    "finetune.batch_size=4",
    "trainer.micro_batch_size=4",
    "trainer.progress_bar=false",
    "eval.progress=false",
    "eval.bootstrap_samples=10",
    "eval.control=null",
    "eval.known_prompts=0",
    "retriever.k=1",
]


@pytest.mark.parametrize("method", ["qa_ft", "distill", "raft"])
def test_each_new_arm_trains_and_scores_end_to_end(method, tmp_path, cache_dir):
    from kfr.cell import run_cell

    cfg = compose_config([*TINY, f"method={method}", f"paths.cache_dir={tmp_path / 'cache'}"])
    results = run_cell(cfg, tmp_path / "run")
    ft = results.finetune
    assert ft["examples"] > 0 and ft["steps"] > 0 and ft["target_tokens_per_epoch"] > 0
    qa = ft["qa"]
    assert qa["pairs"] == ft["examples"] and 0 <= qa["max_5gram_overlap"] < 0.5
    assert results.metrics["n"] == 36
    assert (method == "raft") == (results.retrieval is not None)
    if method == "raft":
        assert ft["raft"]["raft_chunks_per_prompt"] == 1


def test_a_fine_tuned_cell_reports_forgetting_and_categories(tmp_path):
    from kfr.cell import run_cell
    from kfr.data.questions import write_questions_jsonl

    control = [
        Question(f"c{i}", f"What is the capital of country {i}?", ("Oslo", "Rome", "Lima"), i % 3)
        for i in range(6)
    ]
    write_questions_jsonl(tmp_path / "control.jsonl", control)
    common = [
        *[o for o in TINY if not o.startswith(("eval.control", "eval.known_prompts"))],
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"eval.control={tmp_path / 'control.jsonl'}",
        "eval.known_prompts=2",
    ]
    ft = run_cell(compose_config([*common, "method=qa_ft"]), tmp_path / "ft")
    m = ft.metrics
    assert m["control_n"] == 6 and -1 <= m["forgetting"] <= 1
    low, high = m["forgetting_ci95"]
    assert low <= m["forgetting"] <= high
    assert m["forgetting"] == pytest.approx(m["control_base_acc"] - m["control_acc"])
    assert sum(c["n"] for c in m["per_category"].values()) == m["n"]
    assert ft.analysis["known_categories"] and ft.analysis["path"].endswith("control.jsonl")
    base = run_cell(compose_config([*common, "method=base"]), tmp_path / "base")
    assert "forgetting" not in base.metrics  # forgetting is what fine-tuning costs
    assert base.metrics["per_category"].keys() == m["per_category"].keys()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=qa_ft", "eval.control=/no/such/control.jsonl"], "control.jsonl"),
        (["method=distill", "qa.documents_ratio=0.5"], r"qa\.documents_ratio"),
        (["method=raft", "retriever.k=0"], r"retriever\.k"),
        (["method=qa_ft", "qa.per_fact=9"], r"qa\.per_fact"),
        (["method=qa_ft", "qa=file", "qa.file=/no/such/pairs.jsonl"], "pairs.jsonl"),
    ],
)
def test_arms_with_settings_they_cannot_use_stop_before_training(overrides, message, tmp_path):
    from kfr.cell import run_cell

    cache = tmp_path / "cache"
    cfg = compose_config([*TINY, *overrides, f"paths.cache_dir={cache}"])
    with pytest.raises(UserError, match=message):
        run_cell(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not (cache / "finetuned").exists() or not any((cache / "finetuned").iterdir())


def test_a_teacher_prompt_longer_than_the_context_is_refused(tiny_lm):
    from dataclasses import replace

    long = TrainingExample(
        qa_prompt(PAIRS[0].question),
        " " + PAIRS[0].answer,
        qa_prompt(PAIRS[0].question, ["w " * 3000]),
    )
    small = replace(tiny_lm, max_length=512)
    with pytest.raises(
        UserError, match=r"distill\.teacher_context.*longer than the model's context"
    ):
        compute_teacher_targets(small, [long], top_k=4, progress=False)

"""Training question-answer pairs (qa=template|file|llm) and their overlap with the evaluation."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from kfr.core.errors import UserError
from kfr.core.schema import typed_config
from kfr.data.loading import EvalData
from kfr.data.novel_facts import (
    ATTRIBUTES,
    QUESTION_TEMPLATES,
    TRAINING_QUESTION_TEMPLATES,
    NovelFactsSpec,
    generate_novel_facts,
    training_pairs,
)
from kfr.data.overlap import Overlap, max_overlap, overlap, words
from kfr.data.qa_file import read_qa_pairs, write_qa_pairs_jsonl
from kfr.data.schema import Document, QaPair, Question
from kfr.finetune.qa_pairs import llm_qa_pairs, training_qa_pairs
from tests.conftest import compose_config

NAME = "Velorin Quastebrook"
DOCS = [
    Document("a", "Orvion Zeltbrook was born in Brimsalt in 1950 and worked as a cooper."),
    Document("b", "Kestasta Halvmere founded the Pellam Seed Library and played the lute."),
]
EVAL = [
    Question("e1", "In which city was Orvion Zeltbrook born?", ("Brimsalt", "Lunquay"), 0),
    Question("e2", "Which instrument did Kestasta Halvmere play?", ("lute", "harp"), 0),
]


def qa_cfg(*overrides: str):
    return typed_config(compose_config(["method=qa_ft", *overrides]))


@pytest.fixture(scope="module")
def default_data():
    return generate_novel_facts(NovelFactsSpec())


def small_data():
    data = generate_novel_facts(NovelFactsSpec(n_entities=4, n_paraphrases=0))
    return EvalData(data.questions, None, data.documents, "q", "k", None)


# --------------------------------------------------------------------------- overlap


def test_overlap_of_identical_disjoint_and_partial_questions():
    assert overlap("In which city was Ada born?", "in which CITY was ada born") == 1.0
    assert overlap("Where was she born?", "Where was she born") == 1.0  # short: equal words
    assert overlap("Where was he born?", "Where was she born?") == 0.0  # short: not equal
    assert overlap("Who employed Velorin Quastebrook?", "What did Ada Lovelace invent?") == 0.0
    # 1 of the evaluation question's 3 five-grams
    assert overlap(
        "Which city was Velorin Quastebrook from?", f"In which city was {NAME} born?"
    ) == (pytest.approx(1 / 3))
    assert words("Velorin Quastebrook's hurdy-gurdy!") == ("velorin", "quastebrooks", "hurdygurdy")


def test_max_overlap_finds_the_worst_pair_and_handles_empty_lists():
    training = ["Who employed Ada?", f"Which city was {NAME} from?", "Name the body Ada founded."]
    evaluation = ["What year was Ada born?", f"In which city was {NAME} born?"]
    worst = max_overlap(training, evaluation)
    assert worst == Overlap(pytest.approx(1 / 3), training[1], evaluation[1])
    assert max_overlap(training, ["Who employed Ada"]).value == 1.0  # equal after normalising
    assert max_overlap([], evaluation).value == 0.0
    assert max_overlap(training, []) == Overlap(0.0, "", "")


def test_max_overlap_is_fast_on_ten_thousand_by_a_thousand_questions():
    import time

    training = [
        f"question {i} about the thing called item{i % 997} and its owner" for i in range(10000)
    ]
    evaluation = [f"what is the thing called item{i} and its history" for i in range(1000)]
    start = time.perf_counter()
    worst = max_overlap(training, evaluation)
    assert time.perf_counter() - start < 5.0
    assert worst.value == pytest.approx(2 / 5)  # "the thing called itemN and", "... and its"


# --------------------------------------------------------------------------- template source


def test_training_templates_are_not_the_evaluation_phrasings():
    for attribute in TRAINING_QUESTION_TEMPLATES:  # every fact and the mentor
        templates = TRAINING_QUESTION_TEMPLATES[attribute]
        assert len(templates) >= 4 and len(set(templates)) == len(templates)
        for other in ATTRIBUTES:
            evaluation = QUESTION_TEMPLATES[other].format(name=NAME)
            for template in templates:
                training = template.format(name=NAME)
                assert overlap(training, evaluation) == 0.0, (training, evaluation)
                # Not a near rewording either: at most two thirds of the words line up.
                similar = difflib.SequenceMatcher(None, words(training), words(evaluation))
                assert similar.ratio() < 0.7, (training, evaluation)


def test_template_pairs_are_deterministic_and_respect_per_fact(default_data):
    documents = default_data.documents
    pairs = training_pairs(documents, 2, seed=0)
    assert pairs == training_pairs(documents, 2, seed=0)
    assert pairs != training_pairs(documents, 2, seed=1)  # another seed, other phrasings
    # every fact and (version 2) the mentor
    assert len(pairs) == 2 * (len(ATTRIBUTES) + 1) * len(documents)
    assert len({p.id for p in pairs}) == len(pairs)
    first = documents[0]
    mine = [p for p in pairs if p.doc_id == first.id]
    for attribute, value in first.meta["facts"].items():
        about = [p for p in mine if p.id.startswith(f"{first.id}-{attribute}-t")]
        assert len(about) == 2 and len({p.question for p in about}) == 2
        assert all(p.answer == value and first.meta["entity"] in p.question for p in about)
    # A document's pairs do not depend on the rest of the knowledge base.
    assert training_pairs(documents[:1], 2, seed=0) == mine


def test_template_pairs_never_reword_the_real_evaluation_set(default_data):
    pairs = training_pairs(default_data.documents, 5, seed=0)  # every training phrasing
    evaluation = [q.question for q in default_data.questions]
    normalised = {words(q) for q in evaluation}
    assert not any(words(p.question) in normalised for p in pairs)
    worst = max_overlap([p.question for p in pairs], evaluation)
    print(f"largest word-5-gram overlap on the default novel_facts set: {worst.value:.3f} {worst}")
    assert worst.value < 0.5


def test_template_source_reports_the_overlap_in_stats(default_data):
    data = EvalData(default_data.questions, None, default_data.documents, "q", "k", None)
    result = training_qa_pairs(qa_cfg("qa=template"), data, "unused")
    assert len(result.pairs) == 3 * (len(ATTRIBUTES) + 1) * len(default_data.documents)
    assert result.stats["source"] == "template" and result.stats["pairs"] == len(result.pairs)
    assert result.stats["documents"] == len(default_data.documents)
    assert result.stats["max_5gram_overlap"] < 0.5
    print("template stats:", result.stats)


@pytest.mark.parametrize("per_fact", [0, 6])
def test_template_per_fact_out_of_range_is_a_user_error(default_data, per_fact):
    with pytest.raises(UserError) as err:
        training_pairs(default_data.documents, per_fact, seed=0)
    assert err.value.field == "qa.per_fact"


def test_template_source_needs_the_generated_data_set():
    data = EvalData(EVAL, None, DOCS, "q", "k", None)
    with pytest.raises(UserError, match="qa=llm or qa=file") as err:
        training_qa_pairs(qa_cfg("qa=template"), data, "unused")
    assert "document 'a'" in str(err.value)


# --------------------------------------------------------------------------- file source


def _write_lines(path: Path, records) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pair(id_="p1", doc_id="a", question="Who was born in Brimsalt?", answer="Orvion Zeltbrook"):
    return {"id": id_, "doc_id": doc_id, "question": question, "answer": answer}


def test_qa_file_round_trip(tmp_path):
    pairs = [QaPair("p1", "a", "Who was born in Brimsalt?", "Orvion Zeltbrook")]
    write_qa_pairs_jsonl(tmp_path / "qa.jsonl", pairs)
    assert read_qa_pairs(tmp_path / "qa.jsonl") == pairs


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("{not json", "qa.jsonl:2: malformed JSON"),
        (_pair("p2", answer=""), "qa.jsonl:2: field 'answer': must not be empty"),
        ({"id": "p2", "doc_id": "a", "question": "Why?"}, "qa.jsonl:2: field 'answer': missing"),
        (_pair("p1"), "qa.jsonl:2: field 'id': duplicate question-answer pair id 'p1'"),
    ],
)
def test_qa_file_errors_name_file_and_line(tmp_path, bad, expected):
    path = _write_lines(tmp_path / "qa.jsonl", [_pair(), bad])
    with pytest.raises(UserError) as err:
        read_qa_pairs(path)
    assert expected in str(err.value)


def test_file_source_rejects_unknown_documents(tmp_path):
    path = _write_lines(tmp_path / "qa.jsonl", [_pair(), _pair("p2", doc_id="zz")])
    cfg = qa_cfg("qa=file", f"qa.file={path}")
    data = EvalData(EVAL, None, DOCS, "q", "k", None)
    with pytest.raises(UserError) as err:
        training_qa_pairs(cfg, data, "unused")
    assert err.value.field == "doc_id" and err.value.line == 2
    assert f"{path}:2: field 'doc_id': unknown document 'zz'" in str(err.value)
    good = _write_lines(tmp_path / "good.jsonl", [_pair()])
    result = training_qa_pairs(qa_cfg("qa=file", f"qa.file={good}"), data, "unused")
    assert result.pairs == [QaPair(**_pair())] and result.stats["file"] == str(good)


def test_a_close_paraphrase_of_an_evaluation_question_is_refused(tmp_path):
    data = small_data()
    target = data.questions[0]  # "In which city was <name> born?"
    name = data.documents[0].meta["entity"]
    close = _pair(doc_id=data.documents[0].id, question=f"Tell me in which city was {name} born")
    path = _write_lines(tmp_path / "qa.jsonl", [close])
    with pytest.raises(UserError) as err:
        training_qa_pairs(qa_cfg("qa=file", f"qa.file={path}"), data, "unused")
    assert err.value.field == "qa.max_overlap"
    assert close["question"] in str(err.value) and target.question in str(err.value)
    assert str(err.value).startswith(f"{path}:1: ")  # the offending record's file and line
    # A third of the 5-grams: allowed by the default threshold, refused by a stricter one.
    partial = _pair(doc_id=data.documents[0].id, question=f"Which city was {name} from?")
    path = _write_lines(tmp_path / "partial.jsonl", [partial])
    result = training_qa_pairs(qa_cfg("qa=file", f"qa.file={path}"), data, "unused")
    assert result.stats["max_5gram_overlap"] == pytest.approx(1 / 3)
    assert result.stats["max_overlap_pair"] == [partial["question"], target.question]
    with pytest.raises(UserError, match=r"qa\.max_overlap"):
        training_qa_pairs(qa_cfg("qa=file", f"qa.file={path}", "qa.max_overlap=0.2"), data, "x")


# --------------------------------------------------------------------------- llm source


class ScriptedGenerator:
    """Answers from a script, one callable per generate() call; records the prompts."""

    name = "scripted"

    def __init__(self, *rounds):
        self.rounds = list(rounds)
        self.calls: list[list[str]] = []

    def generate(self, prompts, *, seed, prefill=""):
        self.calls.append(list(prompts))
        answer = self.rounds.pop(0)
        return [answer(p) for p in prompts]


def _reply(*pairs) -> str:
    return "```json\n" + json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})


def first_round(prompt: str) -> str:
    if "Orvion" in prompt:
        return "Sorry, I cannot help with that."  # not JSON: retried
    return _reply(
        ("What did Kestasta Halvmere found?", "the Pellam Seed Library"),
        ("Which instrument did Kestasta Halvmere play?", "the theorbo"),  # not in the document
        ("Did Kestasta Halvmere play the lute?", "lute"),  # the question gives it away
    )


def second_round(prompt: str) -> str:
    assert "Orvion" in prompt  # only the failed prompt is asked again
    return _reply(("Where was Orvion Zeltbrook born?", "Brimsalt"), ("When was he born?", "1950"))


def test_llm_pairs_are_validated_counted_and_cached(tmp_path):
    cfg = qa_cfg("qa=llm")
    data = EvalData(EVAL, None, DOCS, "q", "k", None)
    generator = ScriptedGenerator(first_round, second_round)
    result = training_qa_pairs(cfg, data, tmp_path, generator=generator)
    assert [(p.id, p.answer) for p in result.pairs] == [
        ("a-q0", "Brimsalt"),
        ("a-q1", "1950"),
        ("b-q0", "the Pellam Seed Library"),
    ]
    generation = result.stats["generation"]
    assert generation["invalid_json"] == 1 and generation["attempts"] == 3
    assert generation["failed"] == 0
    assert generation["rejected_pairs"]["answer_not_in_document"] == 1
    assert generation["rejected_pairs"]["answer_in_question"] == 1
    assert result.stats["source"] == "llm" and result.stats["pairs"] == 3
    assert 0.0 <= result.stats["max_5gram_overlap"] <= 0.5
    cache = Path(result.stats["cache"])
    assert cache.parent == tmp_path / "qa" and cache.name.startswith("smollm2_135m-")
    card = json.loads((cache / "qa.card.json").read_text(encoding="utf-8"))
    assert card["kind"] == "qa_pairs" and card["counts"]["pairs"] == 3
    assert '"pairs"' in generator.calls[0][0]

    # Same settings and documents: read back from the cache, the generator is not asked.
    idle = ScriptedGenerator()
    again = training_qa_pairs(cfg, data, tmp_path, generator=idle)
    assert again.pairs == result.pairs and idle.calls == []
    assert again.stats["generation"] == generation
    # Another seed writes anew.
    other = ScriptedGenerator(first_round, second_round)
    llm_qa_pairs(cfg.qa, DOCS, 1, tmp_path, generator=other)
    assert other.calls


def test_llm_with_no_usable_pair_is_a_user_error_and_not_cached(tmp_path):
    cfg = qa_cfg("qa=llm", "qa.generator.retries=0")
    data = EvalData(EVAL, None, DOCS, "q", "k", None)
    generator = ScriptedGenerator(lambda prompt: "no")
    with pytest.raises(UserError) as err:
        training_qa_pairs(cfg, data, tmp_path, generator=generator)
    assert err.value.field == "qa.generator"
    assert not any((tmp_path / "qa").glob("*/qa.jsonl"))

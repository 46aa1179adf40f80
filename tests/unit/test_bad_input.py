"""Bad input stops a cell before any work with one line naming the file (and line) and field:
values outside a key's range, settings the data cannot honour, records that name what does not
exist. Through the real `kfr` command where it matters that nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfr.core.errors import UserError
from kfr.core.schema import PromptStyle, RetrieverConfig
from kfr.data.readers import write_knowledge_base_jsonl, write_questions_jsonl
from kfr.data.schema import Document, Question
from tests.conftest import compose_config
from tests.unit.retrieval_fakes import HashingEncoder
from tests.unit.test_cli import run_kfr


def _questions(path: Path, n: int, *, prefix: str = "q", source_ids=None) -> Path:
    write_questions_jsonl(
        path,
        [
            Question(
                f"{prefix}{i}", f"Question {i}?", ("red", "green"), i % 2, source_ids=source_ids
            )
            for i in range(n)
        ],
    )
    return path


def _assert_one_line_exit_2_nothing_written(result, out_root: Path) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not out_root.exists() or not any(out_root.rglob("*")), list(out_root.rglob("*"))
    return lines[0]


# ----------------------------------------------------------------------------- the kfr command


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["eval.batch_size=0"], "kfr: error: config: field 'eval.batch_size': must be >= 1, got 0"),
        (
            ["method=ft", "finetune.warmup_ratio=1.5"],
            "kfr: error: config: field 'finetune.warmup_ratio': must be in [0, 1), got 1.5",
        ),
        (
            ["data=custom", "data.questions=FIVE", "eval.shots=50"],
            "kfr: error: field 'eval.shots': 50 few-shot examples asked for, but FIVE has only 5 "
            "questions and no few-shot pool (at most 4 usable)",
        ),
        (
            ["data=custom", "data.questions=UNKNOWN_SOURCE", "data.knowledge=KB"],
            "kfr: error: UNKNOWN_SOURCE:2: field 'source_ids': question 'q1' names unknown "
            "document 'd9'",
        ),
        (
            ["data=custom", "data.questions=WIDE", "eval.style=letter"],
            "kfr: error: WIDE:2: field 'choices': question 'q1' has 27 choices, but "
            "eval.style=letter labels at most 26 (A-Z); use eval.style=cloze",
        ),
    ],
)
def test_the_command_stops_before_any_work(tmp_path, cache_dir, overrides, expected):
    five = _questions(tmp_path / "five.jsonl", 5)
    kb = tmp_path / "kb.jsonl"
    write_knowledge_base_jsonl(kb, [Document("d1", "Some text.")])
    unknown = tmp_path / "unknown.jsonl"
    write_questions_jsonl(
        unknown,
        [
            Question("q0", "First?", ("a", "b"), 0, source_ids=("d1",)),
            Question("q1", "Second?", ("a", "b"), 1, source_ids=("d1", "d9")),
        ],
    )
    wide = tmp_path / "wide.jsonl"
    write_questions_jsonl(
        wide,
        [
            Question("q0", "Two?", ("a", "b"), 0),
            Question("q1", "Many?", tuple(f"option {i}" for i in range(27)), 3),
        ],
    )
    names = {"FIVE": str(five), "UNKNOWN_SOURCE": str(unknown), "KB": str(kb), "WIDE": str(wide)}

    def fill(text: str) -> str:
        for name, value in names.items():
            text = text.replace(name, value)
        return text

    out_root = tmp_path / "outputs"
    result = run_kfr(
        *map(fill, overrides),
        f"paths.output_root={out_root}",
        cache_dir=cache_dir,
        cwd=tmp_path,
    )
    assert _assert_one_line_exit_2_nothing_written(result, out_root) == fill(expected)


# ----------------------------------------------------------------------------- data vs settings


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the cell gets as far as loading a model."""
    import kfr.cell.run

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded: the check came too late")

    monkeypatch.setattr(kfr.cell.run, "load_model", refuse)


def _run_cell(tmp_path: Path, *overrides: str):
    from kfr.cell import run_cell

    cfg = compose_config(
        ["model=tiny_llama", "data=custom", "eval.progress=false", "logger=none", *overrides]
    )
    run_cell(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    ("n", "overrides", "fragment"),
    [
        (6, ["eval.shots=3", "data.limit=3"], "(cut by data.limit=3) has only 3 questions"),
        (6, ["eval.shots=4", "data.fewshot=POOL"], "the few-shot pool POOL has only 3 questions"),
        (4, ["eval.known_prompts=1"], "SliCK categories need 4 few-shot examples per prompt"),
    ],
)
def test_settings_the_data_cannot_honour_stop_before_the_model_loads(
    tmp_path, no_model, n, overrides, fragment
):
    questions = _questions(tmp_path / "q.jsonl", n)
    pool = _questions(tmp_path / "pool.jsonl", 3, prefix="dev")
    overrides = [o.replace("POOL", str(pool)) for o in overrides]
    with pytest.raises(UserError) as info:
        _run_cell(tmp_path, f"data.questions={questions}", *overrides)
    message = info.value.format()
    assert fragment.replace("POOL", str(pool)) in message, message
    assert info.value.field in {"eval.shots", "eval.known_prompts"}
    assert not (tmp_path / "run").exists()


def test_as_many_shots_as_the_data_holds_are_fine(tmp_path):
    from kfr.evaluation.prompts import build_requests, check_fewshot, fewshot_capacity

    questions = [Question(f"q{i}", f"Q{i}?", ("a", "b"), 0) for i in range(5)]
    assert fewshot_capacity(questions, None) == 4
    assert fewshot_capacity(questions, questions[:3]) == 2  # the pool holds the questions
    assert fewshot_capacity(questions, [Question("dev", "D?", ("a", "b"), 0)]) == 1
    check_fewshot(4, questions, None, questions_label="q.jsonl", pool_label=None)
    requests = build_requests(questions, "cloze", shots=4)
    assert all(r.context.count("Question:") == 5 for r in requests)  # 4 examples + the question


def test_more_chunks_than_the_knowledge_base_holds_is_an_error(tmp_path):
    from kfr.retrieval.retrieve import retrieve_passages

    documents = [Document(f"d{i}", f"Entity {i} lives in town {i}.") for i in range(3)]
    questions = [Question("q", "Where does entity 1 live?", ("a", "b"), 0)]
    cfg = RetrieverConfig(name="t", chunk_tokens=64, chunk_overlap=0, device="cpu", k=5)
    with pytest.raises(UserError) as info:
        retrieve_passages(cfg, questions, documents, tmp_path, encoder=HashingEncoder())
    assert info.value.field == "retriever.k"
    assert "5 chunks asked for per question, but the knowledge base has only 3 chunks" in str(
        info.value
    )
    cfg = RetrieverConfig(name="t", chunk_tokens=64, chunk_overlap=0, device="cpu", k=3)
    found = retrieve_passages(cfg, questions, documents, tmp_path, encoder=HashingEncoder())
    assert len(found.hits["q"]) == 3


def test_more_template_paraphrases_than_generated_stop_before_any_data(tmp_path, no_model):
    from kfr.cell import run_cell

    cfg = compose_config(["model=tiny_llama", "method=ft", "augment.paraphrases=9"])
    with pytest.raises(UserError) as info:
        run_cell(cfg, tmp_path / "run")
    assert info.value.field == "augment.paraphrases"
    assert "9 paraphrases per document asked for, the generated data set has 8" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_choice_the_model_cannot_read_names_the_question_file_and_line(tmp_path):
    """Found by a user: the message named the question id only; now its file:line too."""
    from kfr.data.readers import read_questions
    from kfr.evaluation.loglikelihood import plan_units
    from kfr.evaluation.prompts import build_requests

    path = tmp_path / "q.jsonl"
    write_questions_jsonl(
        path,
        [
            Question("q0", "Short?", ("yes", "no"), 0),
            Question("q1", "Long?", ("yes", " ".join(["word"] * 40)), 0),
        ],
    )
    requests = build_requests(read_questions(path), PromptStyle.cloze)
    with pytest.raises(UserError) as info:
        plan_units(requests, _whitespace_tokenizer(), max_length=16)
    assert info.value.format().startswith(f"{path}:2: field 'choices': question q1: choice 1 (40")


def _whitespace_tokenizer():
    """One token per word: enough to count a choice's length."""

    class Tokenizer:
        bos_token_id = 0
        eos_token_id = 0

        def decode(self, token_id):
            return "<s>"

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [hash(word) % 1000 + 1 for word in text.split()]}

    return Tokenizer()

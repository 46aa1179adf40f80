"""Readers: every bad input is a one-line UserError at path:line, good inputs round-trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kfr.core.errors import UserError
from kfr.data.readers import (
    load_hf_questions,
    mmlu_subject,
    read_knowledge_base,
    read_paraphrases,
    read_questions,
    validate_source_ids,
    write_knowledge_base_jsonl,
    write_paraphrases_jsonl,
    write_questions_jsonl,
)
from kfr.data.schema import Document, Question

GOOD_DOC = {"id": "d1", "text": "Some text."}
GOOD_Q = {"id": "q1", "question": "Why?", "choices": ["a", "b", "c", "d"], "answer": 1}


def _jsonl(path: Path, *lines: object) -> Path:
    """Write lines (dicts as JSON, strings verbatim) to ``path``."""
    path.write_text(
        "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines),
        encoding="utf-8",
    )
    return path


def _where(path: Path, line: int | None = None, field: str | None = None) -> str:
    """Regex for the start of an error message: ``path:line: field 'x': ``."""
    where = re.escape(str(path)) + (f":{line}" if line is not None else "")
    return "^" + where + ": " + (re.escape(f"field '{field}': ") if field else "")


# ----------------------------------------------------------------------------- knowledge base


def test_knowledge_base_jsonl_round_trip(tmp_path):
    documents = [
        Document("a", "Alpha text.", title="Alpha", meta={"year": 1999, "tags": ["x"]}),
        Document("b", "Beta text with\u2028a line separator and ünïcödé."),
    ]
    path = tmp_path / "kb.jsonl"
    write_knowledge_base_jsonl(path, documents)
    assert read_knowledge_base(path) == documents


def test_knowledge_base_skips_blank_lines_and_ignores_unknown_keys(tmp_path):
    path = _jsonl(
        tmp_path / "kb.jsonl",
        "",
        {**GOOD_DOC, "extra": 1},
        "   ",
        {"id": "d2", "text": "t", "title": None},
    )
    documents = read_knowledge_base(path)
    assert [d.id for d in documents] == ["d1", "d2"]
    assert documents[1].title is None and documents[1].meta == {}


@pytest.mark.parametrize(
    ("lines", "line", "field", "message"),
    [
        (["{not json"], 1, None, "malformed JSON: Expecting property name"),
        ([GOOD_DOC, "[1, 2]"], 2, None, "expected a JSON object, got array"),
        ([{"text": "t"}], 1, "id", "missing"),
        ([{"id": 7, "text": "t"}], 1, "id", "expected string, got integer"),
        ([{"id": "d", "text": None}], 1, "text", "expected string, got null"),
        ([{"id": "d"}], 1, "text", "missing"),
        ([GOOD_DOC, {"id": "d", "text": "  \n "}], 2, "text", "must not be empty"),
        ([{"id": "d", "text": "t", "title": 3}], 1, "title", "expected string, got integer"),
        ([{"id": "d", "text": "t", "meta": []}], 1, "meta", "expected object, got array"),
        (
            [GOOD_DOC, "", {"id": "d1", "text": "u"}],
            3,
            "id",
            "duplicate document id 'd1' (first on line 1)",
        ),
    ],
)
def test_knowledge_base_bad_lines(tmp_path, lines, line, field, message):
    path = _jsonl(tmp_path / "kb.jsonl", *lines)
    with pytest.raises(UserError, match=_where(path, line, field) + re.escape(message)):
        read_knowledge_base(path)


def test_knowledge_base_missing_empty_and_unsupported(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(UserError, match=_where(missing) + "knowledge base not found"):
        read_knowledge_base(missing)
    empty = _jsonl(tmp_path / "empty.jsonl", "", "  ")
    with pytest.raises(UserError, match=_where(empty) + "empty knowledge base"):
        read_knowledge_base(empty)
    other = tmp_path / "kb.csv"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"unsupported knowledge-base format '\.csv'"):
        read_knowledge_base(other)


def test_knowledge_base_bad_utf8(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_bytes(json.dumps(GOOD_DOC).encode() + b'\n{"id": "x", "text": "\xff"}\n')
    with pytest.raises(UserError, match=_where(path, 2) + "not valid UTF-8"):
        read_knowledge_base(path)


def test_knowledge_base_directory(tmp_path):
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "b.md").write_text("intro\n# The B Title\n\nBody of b.\n", encoding="utf-8")
    (root / "a.txt").write_text("\n  Plain text a.  \n", encoding="utf-8")
    (root / "sub" / "c.md").write_text("## not a level-one heading\nc", encoding="utf-8")
    (root / "ignored.json").write_text("{}", encoding="utf-8")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.md").write_text("hidden", encoding="utf-8")
    documents = read_knowledge_base(root)
    assert [d.id for d in documents] == ["a.txt", "b.md", "sub/c.md"]
    assert [d.title for d in documents] == ["a", "The B Title", "c"]
    assert documents[0].text == "Plain text a."
    assert documents[1].text == "intro\n# The B Title\n\nBody of b."


def test_knowledge_base_directory_errors(tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    with pytest.raises(UserError, match=_where(root) + "empty knowledge base"):
        read_knowledge_base(root)
    (root / "a.md").write_text(" \n", encoding="utf-8")
    with pytest.raises(UserError, match=_where(root / "a.md", None, "text") + "empty document"):
        read_knowledge_base(root)


# ----------------------------------------------------------------------------- questions


def test_questions_jsonl_round_trip(tmp_path):
    questions = [
        Question("q1", "Which?", ("x", "y"), 1),
        Question("q2", "What?", ("a", "b", "c", "d"), 3, subject="s", source_ids=("d1", "d2")),
    ]
    path = tmp_path / "q.jsonl"
    write_questions_jsonl(path, questions)
    assert read_questions(path) == questions


def test_answer_letters_map_to_indices(tmp_path):
    path = _jsonl(
        tmp_path / "q.jsonl",
        {**GOOD_Q, "id": "a", "answer": "A"},
        {**GOOD_Q, "id": "d", "answer": "D"},
        {**GOOD_Q, "id": "i", "answer": 2, "unknown": [1]},
    )
    assert [q.answer for q in read_questions(path)] == [0, 3, 2]


@pytest.mark.parametrize(
    ("lines", "line", "field", "message"),
    [
        ([GOOD_Q, '{"id": "q2",'], 2, None, "malformed JSON"),
        (['"just a string"'], 1, None, "expected a JSON object, got string"),
        ([{**GOOD_Q, "id": None}], 1, "id", "expected string, got null"),
        ([{k: v for k, v in GOOD_Q.items() if k != "question"}], 1, "question", "missing"),
        ([{**GOOD_Q, "question": " "}], 1, "question", "must not be empty"),
        ([{**GOOD_Q, "choices": "abcd"}], 1, "choices", "expected array, got string"),
        (
            [{**GOOD_Q, "choices": ["only"], "answer": 0}],
            1,
            "choices",
            "expected at least 2 choices, got 1",
        ),
        ([{**GOOD_Q, "choices": ["a", 2]}], 1, "choices", "choice 1 must be a string, got integer"),
        ([{**GOOD_Q, "choices": ["a", ""]}], 1, "choices", "choice 1 must not be empty"),
        ([{k: v for k, v in GOOD_Q.items() if k != "answer"}], 1, "answer", "missing"),
        ([{**GOOD_Q, "answer": 4}], 1, "answer", "index 4 is out of range for 4 choices (0-3)"),
        ([{**GOOD_Q, "answer": -1}], 1, "answer", "index -1 is out of range"),
        (
            [{**GOOD_Q, "answer": "E"}],
            1,
            "answer",
            "letter 'E' is out of range for 4 choices (A-D)",
        ),
        ([{**GOOD_Q, "answer": "b"}], 1, "answer", "expected an index or a letter A-Z, got 'b'"),
        (
            [{**GOOD_Q, "answer": True}],
            1,
            "answer",
            "expected an integer index or a letter A-Z, got boolean",
        ),
        (
            [{**GOOD_Q, "answer": 1.0}],
            1,
            "answer",
            "expected an integer index or a letter A-Z, got number",
        ),
        ([{**GOOD_Q, "subject": 5}], 1, "subject", "expected string, got integer"),
        ([{**GOOD_Q, "source_ids": "d1"}], 1, "source_ids", "expected array, got string"),
        ([{**GOOD_Q, "source_ids": ["d1", 2]}], 1, "source_ids", "id 1 must be a string"),
        ([GOOD_Q, GOOD_Q], 2, "id", "duplicate question id 'q1' (first on line 1)"),
    ],
)
def test_questions_bad_lines(tmp_path, lines, line, field, message):
    path = _jsonl(tmp_path / "q.jsonl", *lines)
    with pytest.raises(UserError, match=_where(path, line, field) + re.escape(message)):
        read_questions(path)


def test_questions_stop_at_first_problem(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", GOOD_Q, {**GOOD_Q, "id": "q2", "answer": 9}, "{bad")
    with pytest.raises(UserError, match=_where(path, 2, "answer")):
        read_questions(path)


def test_questions_missing_empty_and_unsupported(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(UserError, match=_where(missing) + "question file not found"):
        read_questions(missing)
    empty = _jsonl(tmp_path / "empty.jsonl", "")
    with pytest.raises(UserError, match=_where(empty) + "no questions"):
        read_questions(empty)
    other = tmp_path / "q.json"
    other.write_text("[]", encoding="utf-8")
    with pytest.raises(UserError, match=r"unsupported question format '\.json'.*\.jsonl, \.csv"):
        read_questions(other)
    with pytest.raises(UserError, match="is a directory"):
        read_questions(tmp_path)


def test_error_messages_are_one_line(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", '{"id": "q1", "question": "a\\nb", "choices": []}')
    with pytest.raises(UserError) as info:
        read_questions(path)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- MMLU CSV

MMLU_ROWS = (
    "What is 2+2?,3,4,5,6,B\n"
    '"A question, with a comma\nand a newline?",w,x,y,z,D\n'
    "\n"
    "Last?,p,q,r,s,A\n"
)


def test_mmlu_csv(tmp_path):
    path = tmp_path / "college_anatomy_test.csv"
    path.write_text(MMLU_ROWS, encoding="utf-8")
    questions = read_questions(path)
    assert [q.id for q in questions] == [
        "college_anatomy_test-0",
        "college_anatomy_test-1",
        "college_anatomy_test-2",
    ]
    assert [q.answer for q in questions] == [1, 3, 0]
    assert questions[1].question == "A question, with a comma\nand a newline?"
    assert questions[0].choices == ("3", "4", "5", "6")
    assert {q.subject for q in questions} == {"college_anatomy"}
    assert all(q.source_ids is None for q in questions)


@pytest.mark.parametrize(
    ("stem", "subject"),
    [("anatomy_test", "anatomy"), ("anatomy_dev", "anatomy"), ("x_val", "x"), ("plain", "plain")],
)
def test_mmlu_subject(stem, subject):
    assert mmlu_subject(stem) == subject


def test_mmlu_csv_errors(tmp_path):
    path = tmp_path / "anatomy_dev.csv"
    path.write_text(MMLU_ROWS + "Short,a,b,c,A\n", encoding="utf-8")
    with pytest.raises(UserError, match=_where(path, 6) + r"expected 6 columns .* got 5"):
        read_questions(path)
    path.write_text(MMLU_ROWS + "Q,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(UserError, match=_where(path, 6, "answer") + "expected one of A, B, C, D"):
        read_questions(path)
    path.write_text("Q,a,,c,d,A\n", encoding="utf-8")
    with pytest.raises(UserError, match=_where(path, 1, "B") + "choice must not be empty"):
        read_questions(path)
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match=_where(path) + "no questions"):
        read_questions(path)
    path.write_bytes(b"Q,a,b,c,d,A\nQ\xe9,a,b,c,d,A\n")
    with pytest.raises(UserError, match=_where(path, 2) + "not valid UTF-8"):
        read_questions(path)


# ----------------------------------------------------------------------------- source ids


def test_validate_source_ids():
    documents = [Document("d1", "t"), Document("d2", "u")]
    good = [
        Question("q1", "?", ("a", "b"), 0, source_ids=("d1", "d2")),
        Question("q2", "?", ("a", "b"), 0),
    ]
    validate_source_ids(good, documents, "q.jsonl")
    bad = [*good, Question("q3", "?", ("a", "b"), 0, source_ids=("d1", "d9"))]
    with pytest.raises(
        UserError,
        match=r"^q\.jsonl: field 'source_ids': question 'q3' names unknown document 'd9'",
    ):
        validate_source_ids(bad, documents, "q.jsonl")


def test_unknown_source_ids_name_the_question_line(tmp_path):
    """The question read from a file is reported at its line, not just its file."""
    path = _jsonl(
        tmp_path / "q.jsonl",
        {**GOOD_Q, "source_ids": ["d1"]},
        "",
        {**GOOD_Q, "id": "q3", "source_ids": ["d1", "d9"]},
    )
    questions = read_questions(path)
    with pytest.raises(UserError) as info:
        validate_source_ids(questions, [Document("d1", "t")], path)
    assert re.match(
        _where(path, 3, "source_ids") + "question 'q3' names unknown document 'd9'$",
        info.value.format(),
    ), info.value.format()


def test_records_remember_their_line_outside_their_identity(tmp_path):
    q_path = _jsonl(tmp_path / "q.jsonl", "", GOOD_Q)
    (question,) = read_questions(q_path)
    assert str(question.where) == f"{q_path}:2"
    made = Question("q1", "Why?", ("a", "b", "c", "d"), 1)
    assert question == made and hash(question) == hash(made) and repr(question) == repr(made)
    assert question.to_json() == made.to_json()
    csv_path = tmp_path / "anatomy_test.csv"
    csv_path.write_text('"Q0?",a,b,c,d,A\n"Q1\nover two lines?",a,b,c,d,B\n"Q2?",a,b,c,d,C\n')
    assert [q.where.line for q in read_questions(csv_path)] == [1, 2, 4]
    kb_path = _jsonl(tmp_path / "kb.jsonl", GOOD_DOC, {"id": "d2", "text": "More."})
    documents = read_knowledge_base(kb_path)
    assert [str(d.where) for d in documents] == [f"{kb_path}:1", f"{kb_path}:2"]
    assert documents[0] == Document("d1", "Some text.")
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "a.md").write_text("# A\ntext")
    (document,) = read_knowledge_base(tmp_path / "kb")
    assert str(document.where) == str(tmp_path / "kb" / "a.md")


def test_record_level_errors_of_every_reader_name_path_and_line(tmp_path):
    from kfr.data.qa_file import read_qa_pairs

    pairs = _jsonl(
        tmp_path / "pairs.jsonl",
        {"id": "p1", "doc_id": "d1", "question": "Q?", "answer": "A"},
        {"id": "p2", "doc_id": "d7", "question": "Q?", "answer": "A"},
    )
    with pytest.raises(UserError, match=_where(pairs, 2, "doc_id") + "unknown document 'd7'"):
        read_qa_pairs(pairs, known_doc_ids={"d1"})
    paraphrases = _jsonl(
        tmp_path / "p.jsonl", {"id": "d1", "paraphrases": ["x"]}, {"id": "d8", "paraphrases": []}
    )
    with pytest.raises(UserError, match=_where(paraphrases, 2, "id") + "names unknown document"):
        read_paraphrases(paraphrases, known_doc_ids={"d1"})
    assert read_paraphrases(paraphrases, known_doc_ids={"d1", "d8"})["d8"] == []
    kb = _jsonl(tmp_path / "kb.jsonl", GOOD_DOC, GOOD_DOC)
    with pytest.raises(UserError, match=_where(kb, 2, "id") + r"duplicate document id 'd1' \("):
        read_knowledge_base(kb)


# ----------------------------------------------------------------------------- paraphrases


def test_paraphrases_round_trip_and_errors(tmp_path):
    paraphrases = {"d1": ["one", "two"], "d2": []}
    path = tmp_path / "p.jsonl"
    write_paraphrases_jsonl(path, paraphrases)
    assert read_paraphrases(path) == paraphrases
    _jsonl(path, {"id": "d1", "paraphrases": ["x", 3]})
    with pytest.raises(UserError, match=_where(path, 1, "paraphrases") + "paraphrase 1 must be"):
        read_paraphrases(path)


# ----------------------------------------------------------------------------- Hugging Face


def test_hf_local_json(tmp_path):
    path = _jsonl(
        tmp_path / "q.jsonl",
        {"question": "Q0?", "choices": ["a", "b", "c", "d"], "answer": 2, "subject": "s"},
        {"question": "Q1?", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "s"},
    )
    questions = load_hf_questions("json", None, "train", data_files=path, cache_dir=tmp_path / "c")
    assert questions == [
        Question("train-0", "Q0?", ("a", "b", "c", "d"), 2, subject="s"),
        Question("train-1", "Q1?", ("a", "b", "c", "d"), 0, subject="s"),
    ]


def test_hf_parquet_directory_with_ids(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {
        "id": ["x", "y"],
        "question": ["Q0?", "Q1?"],
        "choices": [["a", "b"], ["c", "d", "e"]],
        "answer": [1, 2],
    }
    data_dir = tmp_path / "mmlu_like"
    (data_dir / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows).to_parquet(str(data_dir / "data" / "test-00000.parquet"))
    questions = load_hf_questions(str(data_dir), None, "test", cache_dir=tmp_path / "c")
    assert [(q.id, q.answer, q.choices) for q in questions] == [
        ("x", 1, ("a", "b")),
        ("y", 2, ("c", "d", "e")),
    ]


def test_hf_bad_row(tmp_path):
    path = _jsonl(
        tmp_path / "q.jsonl",
        {"question": "Q0?", "choices": ["a", "b"], "answer": 1},
        {"question": "Q1?", "choices": ["a", "b"], "answer": 5},
    )
    with pytest.raises(UserError, match=r"^json\[train\] row 1: field 'answer': index 5"):
        load_hf_questions("json", None, "train", data_files=path, cache_dir=tmp_path / "c")


def test_hf_failure_is_a_user_error(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(UserError) as info:
        load_hf_questions(str(missing), "anatomy", "test", cache_dir=tmp_path / "c")
    message = str(info.value)
    assert f"{missing}/anatomy[test]" in message
    assert "data.questions" in message
    assert "\n" not in message


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "anatomy_test.csv"
    path.write_bytes(b"\xef\xbb\xbfQ,a,b,c,d,A\n")
    assert read_questions(path)[0].question == "Q"
    path.write_bytes(b"\xef\xbb\xbfQ,a,b,c,d,A\nQ,a,b,c,d,A\n\xff\n")
    with pytest.raises(UserError, match=_where(path, 3) + "not valid UTF-8"):
        read_questions(path)

"""Question generation: validation, specificity, selection, the OpenAI-compatible client and the
`kfr-questions` command, with scripted generators and a scripted endpoint on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from kfr.builders.questions import (
    Candidate,
    QuestionSpec,
    SpecificityIndex,
    answer_supported,
    generate_questions,
    validate_candidate,
)
from kfr.cli.questions import main
from kfr.core.errors import UserError
from kfr.core.http import HttpClient, HttpError, HttpPolicy
from kfr.data.cards import read_card
from kfr.data.readers import read_questions, write_knowledge_base_jsonl
from kfr.data.schema import Document
from kfr.generation.backend import SamplingSettings
from kfr.generation.openai_compat import OpenAICompatGenerator
from tests.unit.fake_server import FakeServer, start

DOCS = [
    Document("d1", "Velorin Quastebrook was born in the city of Marrowvale in 1931. "
             "Velorin Quastebrook worked as a glassblower for Harrowgate Optics.", "Velorin"),
    Document("d2", "Thalasta Morvwick was born in Brimsalt in 1950. Thalasta Morvwick "
             "founded the Quillmere Foundation and played the oboe.", "Thalasta"),
]  # fmt: skip


def _q(question, options, answer):
    return {"question": question, "options": options, "answer": answer}


GOOD_D1 = [
    _q("In which city was Velorin Quastebrook born?",
       ["Brimsalt", "Marrowvale", "Ostrevik", "Lunquay"], "B"),
    _q("Which company employed Velorin Quastebrook?",
       ["A. Harrowgate Optics", "B. Sundrake Ferries", "C. Quellmark", "D. Yarrowby Mills"], 0),
    _q("In what year was Velorin Quastebrook born?", ["1931", "1950", "1902", "1977"], "1931"),
    # Supported by d1, but its words point at d2: not grounded in d1.
    _q("Which foundation did the oboe player from Brimsalt join?",
       ["Harrowgate Optics", "Sundrake Ferries", "Quellmark", "Yarrowby Mills"], "A"),
]  # fmt: skip
BAD_D2 = [
    _q("Which instrument did Thalasta Morvwick play?", ["oboe", "harp", "oboe", "lute"], "A"),
    _q("Which organisation did Thalasta Morvwick found?",
       ["Quillmere Foundation", "Drayle Trust", "Pellam Library", "Kite Guild"], "E"),
    _q("Where was Thalasta Morvwick born?", ["Paris", "Rome", "Oslo", "Lima"], "A"),
    _q("Did Thalasta Morvwick play the oboe, the oboe being the answer?",
       ["oboe", "harp", "lute", "tuba"], "A"),
    {"question": "Too few options for Thalasta Morvwick?", "options": ["a", "b"], "answer": "A"},
]  # fmt: skip


class Scripted:
    """A TextGenerator that answers each prompt with the next scripted reply for its chunk."""

    name = "scripted"

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = replies
        self.calls = 0

    def generate(self, prompts, *, seed):
        self.calls += 1
        out = []
        for prompt in prompts:
            key = next(k for k in self.replies if k in prompt)
            queue = self.replies[key]
            out.append(queue.pop(0) if len(queue) > 1 else queue[0])
        return out


def test_validation_reasons():
    text = DOCS[0].text
    assert validate_candidate(GOOD_D1[0], "d1", text).answer == 1
    labelled = validate_candidate(GOOD_D1[1], "d1", text)
    assert labelled.choices[0] == "Harrowgate Optics" and labelled.answer == 0
    assert validate_candidate(GOOD_D1[2], "d1", text).answer == 0  # answer given as its text
    reasons = []
    for raw in BAD_D2:
        with pytest.raises(ValueError) as err:
            validate_candidate(raw, "d2", DOCS[1].text)
        reasons.append(err.value.reason)
    assert reasons == [
        "duplicate_choices", "answer_not_in_choices", "unsupported_answer",
        "answer_in_question", "malformed",
    ]  # fmt: skip
    assert answer_supported("Harrowgate optics", text)
    assert not answer_supported("1932", text)


def test_specificity_prefers_questions_grounded_in_their_own_chunk():
    index = SpecificityIndex(DOCS)
    specific = Candidate("d1", "In which city was Velorin Quastebrook born?", ("Marrowvale",), 0)
    shared = Candidate("d1", "What was born in a city?", ("1931",), 0)
    confused = Candidate("d1", "Which foundation did the oboe player join?", ("Harrowgate",), 0)
    assert index.specificity(specific) > 0.5
    assert index.specificity(shared) < index.specificity(specific)
    assert index.specificity(confused) < 0  # its words are in the other chunk
    # A question about something else that happens to end on a fact of the chunk.
    copied = Candidate(
        "d1", "How high is the summit of Mount Kenya, the highest in the world?", ("1931",), 0
    )
    support, _ = index.scores(copied)
    assert support < QuestionSpec().min_support <= index.scores(specific)[0]


def test_generation_keeps_the_most_specific_valid_questions_and_counts_the_rest():
    replies = {
        "Velorin": ["Sure! ```json\n" + json.dumps({"questions": GOOD_D1}) + "\n```"],
        "Thalasta": ["I cannot do that.", json.dumps(BAD_D2)],  # no JSON, then bad questions
    }
    generator = Scripted(replies)
    result = generate_questions(DOCS, generator, QuestionSpec(per_chunk=4, keep=2, seed=3))
    assert [q.id for q in result.questions] == ["d1/q0", "d1/q1"]
    assert all(q.source_ids == ("d1",) for q in result.questions)
    texts = {q.question for q in result.questions}
    assert not any("oboe" in text for text in texts)
    for q in result.questions:
        assert len(q.choices) == 4
        assert answer_supported(q.choices[q.answer], DOCS[0].text)
    counts = result.counts
    # d2: no JSON, then twice five bad questions (asked again while none passes), then given up.
    assert counts["candidates"] == 4 + 5 + 5
    assert counts["json"] == {
        "prompts": 2, "attempts": 4, "invalid_json": 1, "invalid_content": 2, "failed": 1,
    }  # fmt: skip
    assert counts["rejected"]["not_grounded"] == 1 and counts["rejected"]["not_kept"] == 1
    assert counts["rejected"]["duplicate_choices"] == 2
    assert counts["rejected"]["unsupported_answer"] == 2
    assert counts["questions"] == 2 and counts["chunks_with_questions"] == 1
    # Same seed, same questions (option order included); a reply is asked again once.
    again = generate_questions(DOCS, Scripted(replies), QuestionSpec(seed=3))
    assert again.questions == result.questions


def test_option_shuffling_moves_answers_off_the_first_position():
    docs = [Document(f"d{i}", f"Item {i} is made of copper{i} metal and sold in town{i}.")
            for i in range(12)]  # fmt: skip
    replies = {
        f"Item {i} is": [json.dumps([_q(f"What is item {i} made of?",
                                        [f"copper{i}", "tin", "zinc", "gold"], "A")])]
        for i in range(12)
    }  # fmt: skip
    spec = QuestionSpec(keep=1, min_chunk_chars=10)
    result = generate_questions(docs, Scripted(replies), spec)
    assert len(result.questions) == 12
    assert len({q.answer for q in result.questions}) > 1
    assert all(q.choices[q.answer].startswith("copper") for q in result.questions)


def test_simple_prompt_style_asks_one_question_per_request():
    one_each = {
        "Velorin": [json.dumps(GOOD_D1[0]), json.dumps(GOOD_D1[2])],
        "Thalasta": ["no"],
    }
    generator = Scripted(one_each)
    spec = QuestionSpec(per_chunk=2, keep=2, prompt_style="simple", json_retries=0)
    result = generate_questions(DOCS, generator, spec)
    assert result.counts["json"]["prompts"] == 4 and generator.calls == 1
    assert sorted(q.question for q in result.questions) == [
        "In what year was Velorin Quastebrook born?",
        "In which city was Velorin Quastebrook born?",
    ]
    with pytest.raises(UserError, match="prompt_style"):
        QuestionSpec(prompt_style="fancy")


def _chat(content: str) -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}]}  # fmt: skip


@pytest.fixture
def endpoint():
    httpd, server = start(FakeServer())
    yield server
    httpd.shutdown()


def test_openai_client_retries_500_and_non_json_then_succeeds(endpoint, monkeypatch, tmp_path):
    endpoint.script(
        "/v1/chat/completions", (500, {"error": {"message": "overloaded"}}, {}),
        (200, "<html>bad gateway</html>", {}), _chat("hello"),
    )  # fmt: skip
    monkeypatch.setenv("TEST_KEY", "sk-test")
    waits = []
    generator = OpenAICompatGenerator(
        "test-model", SamplingSettings(max_new_tokens=20, temperature=0.0, batch_size=1),
        base_url=f"{endpoint.url}/v1", api_key_env="TEST_KEY",
        http=HttpClient(HttpPolicy(retries=3, backoff_s=0.25), sleep=waits.append),
        cache_dir=tmp_path / "replies",
    )  # fmt: skip
    assert generator.generate(["Say hello"], seed=1) == ["hello"]
    assert waits == [0.25, 0.5]
    request = endpoint.requests[-1]
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.headers["User-Agent"].startswith("kfr/")
    assert request.body["model"] == "test-model" and request.body["max_tokens"] == 20
    assert request.body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert request.body["seed"] == 1_000_003
    # The reply is cached: asking again sends nothing.
    n = len(endpoint.requests)
    assert generator.generate(["Say hello"], seed=1) == ["hello"]
    assert len(endpoint.requests) == n
    assert "sk-test" not in json.dumps(generator.describe())


def test_openai_client_gives_up_with_a_clear_error(endpoint):
    endpoint.script("/v1/chat/completions", (503, "down", {}))
    generator = OpenAICompatGenerator(
        "m", SamplingSettings(batch_size=1), base_url=f"{endpoint.url}/v1",
        http=HttpClient(HttpPolicy(retries=1, backoff_s=0.0)),
    )  # fmt: skip
    with pytest.raises(HttpError, match=r"HTTP 503.*gave up after 2 attempts"):
        generator.generate(["x"], seed=0)
    endpoint.script("/v1/chat/completions", (401, {"error": {"message": "bad key"}}, {}))
    with pytest.raises(HttpError, match=r"HTTP 401.*bad key"):
        generator.generate(["x"], seed=0)


def test_kfr_questions_with_an_openai_compatible_endpoint(endpoint, tmp_path, capsys):
    kb = tmp_path / "kb.jsonl"
    write_knowledge_base_jsonl(kb, DOCS)

    def route(request):
        prompt = request.body["messages"][0]["content"]
        return "d1" if "Velorin" in prompt else "d2"

    endpoint.route = route
    endpoint.script("d1", (500, "oops", {}), _chat(json.dumps({"questions": GOOD_D1})))
    endpoint.script("d2", _chat("not json at all"))
    out = tmp_path / "q" / "questions.jsonl"
    code = main(
        [
            "--knowledge", str(kb), "--out", str(out), "--backend", "openai", "--model", "m",
            "--base-url", f"{endpoint.url}/v1", "--backoff", "0", "--json-retries", "1",
            "--rejects", str(tmp_path / "q" / "rejects.jsonl"), "--subject", "people",
            "--cache-dir", str(tmp_path / "cache"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "wrote 2 questions from 1 of 2 chunks" in capsys.readouterr().out
    questions = read_questions(out)
    assert [q.subject for q in questions] == ["people", "people"]
    card = read_card(out)
    assert card["kind"] == "questions"
    assert card["counts"]["json"]["failed"] == 1  # d2 never gave JSON
    assert card["source"]["generator"]["backend"] == "openai_compat"
    assert set(card["sha256"]) == {"questions.jsonl", "rejects.jsonl"}
    assert card["settings"]["keep"] == 2 and card["settings"]["per_chunk"] == 4
    rejects = [json.loads(line) for line in (tmp_path / "q" / "rejects.jsonl").open()]
    assert {r["reason"] for r in rejects} == {"not_grounded", "not_kept", "no_json"}
    assert {r["raw"] for r in rejects if r["reason"] == "no_json"} == {"not json at all"}
    assert {r["chunk_id"] for r in rejects if r["reason"] == "no_json"} == {"d2"}


def test_kfr_questions_bad_input_is_one_line(tmp_path, capsys):
    code = main(["--knowledge", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "q.jsonl")])
    assert code == 2
    assert "knowledge base not found" in capsys.readouterr().err
    kb = tmp_path / "kb.jsonl"
    write_knowledge_base_jsonl(kb, DOCS)
    code = main(
        ["--knowledge", str(kb), "--out", str(tmp_path / "q.jsonl"), "--backend", "openai",
         "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--retries", "0", "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot connect" in err[0]
    assert not (tmp_path / "q.jsonl").exists()


def test_kfr_questions_runs_the_local_backend(tmp_path, capsys, cache_dir):
    """The tiny random model writes no usable JSON: the run says so and writes nothing."""
    kb = tmp_path / "kb.jsonl"
    write_knowledge_base_jsonl(kb, DOCS)
    code = main(
        ["--knowledge", str(kb), "--out", str(tmp_path / "q.jsonl"), "--model", "tiny_llama",
         "--max-new-tokens", "4", "--json-retries", "0", "--cache-dir", str(cache_dir),
         "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "no question passed the checks" in err
    assert "2 requests without a usable reply" in err
    assert not (tmp_path / "q.jsonl").exists()

"""method=rag through run_cell and kfr-index: K=0 is base, context fitting, recall, bad input."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from kfr.cell import run_cell
from kfr.cli import index as index_cli
from kfr.core.errors import UserError
from kfr.core.identity import config_hash
from kfr.core.schema import PromptStyle, RetrieverConfig
from kfr.data.readers import write_questions_jsonl
from kfr.data.schema import Question
from kfr.evaluation.context import fit_passages
from kfr.evaluation.prompts import build_context, build_requests
from kfr.retrieval import encoders
from kfr.retrieval.chunking import Chunk
from kfr.retrieval.retrieve import Hit, query_text, recall_at
from tests.conftest import compose_config
from tests.unit.retrieval_fakes import HashingEncoder

TINY = ["model=tiny_llama", "eval.progress=false", "eval.bootstrap_samples=10"]


def _predictions(run_dir: Path) -> list[dict]:
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_k0_gives_exactly_the_base_predictions(tmp_path, cache_dir):
    common = [*TINY, "data.limit=24", f"paths.cache_dir={cache_dir}"]
    base = run_cell(compose_config(common), tmp_path / "base")
    rag = run_cell(compose_config([*common, "method=rag", "retriever.k=0"]), tmp_path / "rag")
    assert rag.metrics["acc"] == base.metrics["acc"]
    assert rag.metrics["recall_at_k"] is None and rag.retrieval["index_dir"] is None
    for b, r in zip(_predictions(tmp_path / "base"), _predictions(tmp_path / "rag"), strict=True):
        assert r["loglikelihoods"] == b["loglikelihoods"]  # same prompts, same numbers
        assert r["retrieved_ids"] == [] and r["passages_used"] == 0
    assert "recall@" not in rag.summary()


def test_rag_with_minilm_retrieves_the_source_document_and_reuses_the_index(tmp_path, cache_dir):
    overrides = [*TINY, "method=rag", "retriever.k=2", "data.limit=30"]
    first = run_cell(compose_config([*overrides, f"paths.cache_dir={cache_dir}"]), tmp_path / "a")
    m = first.metrics
    assert m["recall_at_1"] >= 0.9 and m["recall_at_k"] >= m["recall_at_1"]
    info = first.retrieval
    assert info["k"] == 2 and info["index"] == "Flat" and info["chunks"] >= 40
    assert info["context"]["questions_with_dropped_chunks"] == 0
    record = _predictions(tmp_path / "a")[0]
    assert len(record["retrieved_ids"]) == 2 and record["retrieved_ids"][0].startswith("person-")
    assert record["retrieved_scores"][0] >= record["retrieved_scores"][1]
    assert "recall@2" in first.summary()
    second = run_cell(compose_config([*overrides, "retriever.k=1"]), tmp_path / "b")
    assert second.retrieval["index_reused"]
    assert second.retrieval["index_dir"] == info["index_dir"]


def test_config_hash_ignores_the_retriever_unless_the_method_retrieves():
    base = config_hash(compose_config())
    assert base == config_hash(compose_config(["retriever.k=5", "retriever=e5_base"]))
    rag = config_hash(compose_config(["method=rag"]))
    assert rag != config_hash(compose_config(["method=rag", "retriever.k=5"]))


def _question(i: int) -> Question:
    return Question(f"q{i}", f"What is fact {i}?", ("alpha", "beta"), 0, None, (f"d{i}",))


def _hit(doc_id: str) -> Hit:
    return Hit(Chunk(doc_id, 0, "text", None, 0, 4), 1.0)


def test_recall_counts_questions_with_a_source_document_in_the_top_k():
    questions = [_question(i) for i in range(4)] + [Question("x", "?", ("a", "b"), 0)]
    hits = {
        "q0": [_hit("d0"), _hit("d9")],
        "q1": [_hit("d9"), _hit("d1")],
        "q2": [_hit("d9"), _hit("d8")],
        "q3": [],
        "x": [_hit("d0")],  # no source_ids: not judged
    }
    assert recall_at(hits, questions, 1) == 0.25
    assert recall_at(hits, questions, 2) == 0.5
    assert recall_at(hits, [Question("x", "?", ("a", "b"), 0)], 2) is None


def test_the_query_is_the_question_with_the_prefix_and_optionally_the_choices():
    question = _question(3)
    cfg = RetrieverConfig(name="x", query_prefix="query: ")
    assert query_text(question, cfg) == "query: What is fact 3?"
    cfg.query_with_choices = True
    assert query_text(question, cfg) == "query: What is fact 3?\nalpha\nbeta"


def test_chunks_that_do_not_fit_are_dropped_lowest_ranked_first(tiny_lm):
    tokenizer = tiny_lm.tokenizer
    questions = [_question(0), _question(1)]
    passages = {
        "q0": [f"Passage {r} of q0. " + "filler words " * 20 for r in range(4)],
        "q1": ["Short passage."],
    }
    build = partial(build_requests, questions, PromptStyle.cloze)
    base_len = len(tokenizer(build()[0].context)["input_ids"])
    # Room for the prompt and about two of q0's passages (each ~45 tokens), not four.
    max_length = base_len + 100
    requests, kept, stats = fit_passages(build, passages, tokenizer, max_length)
    assert kept["q0"] == passages["q0"][: len(kept["q0"])]  # a prefix: best ranks kept
    assert 1 <= len(kept["q0"]) < 4 and kept["q1"] == passages["q1"]
    assert stats == {"questions_with_dropped_chunks": 1, "dropped_chunks": 4 - len(kept["q0"])}
    assert requests[0].context == build_context(
        questions[0], PromptStyle.cloze, passages=kept["q0"]
    )
    assert requests[0].context.endswith("Question: What is fact 0?\nAnswer:")
    assert len(tokenizer(requests[0].context + " alpha")["input_ids"]) <= max_length + 1
    # A context too small for any passage keeps the prompt whole, without passages.
    requests, kept, _ = fit_passages(build, passages, tokenizer, base_len + 2)
    assert kept["q0"] == [] and requests[0].context == build()[0].context


# ----------------------------------------------------------------------------- bad input


def _custom_data(tmp_path: Path, documents: list[str] | None, questions: list[Question]):
    knowledge = tmp_path / "kb.jsonl"
    knowledge.write_text("".join(line + "\n" for line in documents or []), encoding="utf-8")
    questions_path = tmp_path / "q.jsonl"
    write_questions_jsonl(questions_path, questions)
    return [f"data.knowledge={knowledge}", f"data.questions={questions_path}"]


GOOD_QUESTION = Question("q1", "Where?", ("a", "b"), 0, None, ("d1",))


@pytest.mark.parametrize(
    ("documents", "question", "message"),
    [
        ([], GOOD_QUESTION, "empty knowledge base"),
        (['{"id": "d1", "text": ""}'], GOOD_QUESTION, "field 'text'"),
        (
            ['{"id": "d1", "text": "One."}', '{"id": "d1", "text": "Two."}'],
            GOOD_QUESTION,
            "duplicate document id 'd1'",
        ),
        (
            ['{"id": "d1", "text": "One."}'],
            Question("q1", "Where?", ("a", "b"), 0, None, ("d7",)),
            "unknown document 'd7'",
        ),
    ],
)
def test_bad_knowledge_bases_are_user_errors_and_write_nothing(
    tmp_path, documents, question, message
):
    cache = tmp_path / "cache"
    data = _custom_data(tmp_path, documents, [question])
    cfg = compose_config([*TINY, "method=rag", "data=custom", *data, f"paths.cache_dir={cache}"])
    with pytest.raises(UserError, match=message):
        run_cell(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (cache / "indices").exists()


def test_rag_without_a_knowledge_base_is_a_user_error(tmp_path):
    questions = tmp_path / "q.jsonl"
    write_questions_jsonl(questions, [GOOD_QUESTION])
    cfg = compose_config([*TINY, "method=rag", "data=custom", f"data.questions={questions}"])
    with pytest.raises(UserError, match="needs a knowledge base"):
        run_cell(cfg, tmp_path / "run")


# ----------------------------------------------------------------------------- kfr-index


@pytest.fixture
def kfr_index(monkeypatch, tmp_path, capsys):
    """Run `kfr-index` in this process with a hashing encoder; returns (exit code, out, err)."""
    monkeypatch.setattr(encoders, "load_encoder", lambda cfg: HashingEncoder())
    documents = [json.dumps({"id": f"d{i}", "text": f"Document {i} text."}) for i in range(1, 6)]
    data = _custom_data(tmp_path, documents, [GOOD_QUESTION])

    def run(*overrides: str):
        argv = ["kfr-index", "data=custom", *data, f"paths.cache_dir={tmp_path}", *overrides]
        monkeypatch.setattr("sys.argv", argv)
        code = 0
        try:
            index_cli.main()
        except SystemExit as exit_:
            code = exit_.code
        finally:
            GlobalHydra.instance().clear()
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_kfr_index_builds_then_reuses_and_prints_where(kfr_index, tmp_path):
    code, out, _ = kfr_index()
    assert code == 0 and "built index: " in out
    path = Path(out.split("built index: ")[1].split(" (")[0])
    assert path.parent.parent == tmp_path / "indices" and (path / "index.faiss").is_file()
    code, out, _ = kfr_index()
    assert code == 0 and f"reused index: {path}" in out


def test_kfr_index_bad_spec_exits_2_with_one_line(kfr_index, tmp_path):
    code, _, err = kfr_index("retriever.index=IVFbogus")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kfr-index: error: field 'retriever.index'")
    assert not list((tmp_path / "indices").rglob("index.faiss"))


def test_kfr_index_hops_out_of_range_exits_2_with_one_line(kfr_index):
    code, _, err = kfr_index("retriever.hops=3")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "field 'retriever.hops': must be in [1, 2], got 3" in lines[0]

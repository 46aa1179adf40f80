"""MMLU: subjects, local copies (CSV release, parquet export), configs and a `kfr` run.

Every test builds a tiny fake MMLU tree in tmp_path; the real data is never used.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kfr.cli.mmlu import main
from kfr.core.errors import UserError
from kfr.core.identity import config_hash
from kfr.data.cards import read_card, write_card
from kfr.data.loading import load_eval_data
from kfr.data.mmlu import (
    MMLU_SUBJECTS,
    PAPER_SUBJECTS,
    find_local_copy,
    load_mmlu,
    parse_subjects,
)
from tests.conftest import compose_config
from tests.unit.test_cli import run_kfr

SUBJECTS = ("anatomy", "astronomy")


def _rows(subject: str, split: str, n: int) -> list[list[str]]:
    return [
        [f"{subject} {split} question {i}?", f"a{i}", f"b{i}", f"c{i}", f"d{i}", "ABCD"[i % 4]]
        for i in range(n)
    ]


def make_csv_tree(root: Path, subjects=SUBJECTS, n_test: int = 4, n_dev: int = 3) -> Path:
    """The layout of the original tarball: data/{test,dev,val}/<subject>_<split>.csv."""
    data = root / "data"
    for split, folder, n in (("test", "test", n_test), ("dev", "dev", n_dev), ("val", "val", 2)):
        (data / folder).mkdir(parents=True, exist_ok=True)
        for subject in subjects:
            with (data / folder / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows(_rows(subject, split, n))
    return data


def make_parquet_tree(root: Path, subjects=SUBJECTS, n_test: int = 4, n_dev: int = 3) -> Path:
    """The hub repository's layout: <subject>/<split>-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for subject in subjects:
        (root / subject).mkdir(parents=True, exist_ok=True)
        for split, n in (("test", n_test), ("dev", n_dev)):
            rows = _rows(subject, split, n)
            table = pa.table(
                {
                    "question": [r[0] for r in rows],
                    "subject": [subject] * n,
                    "choices": [r[1:5] for r in rows],
                    "answer": ["ABCD".index(r[5]) for r in rows],
                }
            )
            pq.write_table(table, root / subject / f"{split}-00000-of-00001.parquet")
    return root


def test_subject_list_is_complete_and_holds_the_papers_five():
    assert len(MMLU_SUBJECTS) == 57 == len(set(MMLU_SUBJECTS))
    assert set(PAPER_SUBJECTS) <= set(MMLU_SUBJECTS)
    assert parse_subjects("all") == list(MMLU_SUBJECTS)
    assert parse_subjects(" anatomy, prehistory ") == ["anatomy", "prehistory"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("anatomyy", "unknown MMLU subject 'anatomyy' (did you mean anatomy?)"),
        ("cooking", "`kfr-mmlu subjects` lists the 57"),
        (None, "MMLU needs a subject"),
        ("anatomy,anatomy", "named twice"),
    ],
)
def test_bad_subjects_are_user_errors(spec, expected):
    with pytest.raises(UserError, match=r"data\.hf_name") as err:
        parse_subjects(spec)
    assert expected in str(err.value)


@pytest.mark.parametrize("layout", ["csv", "parquet"])
def test_local_copies_give_the_same_questions_and_ids(tmp_path, layout):
    make = make_csv_tree if layout == "csv" else make_parquet_tree
    root = make(tmp_path)
    copy = find_local_copy(root)
    assert copy.layout == layout
    loaded = load_mmlu(["anatomy", "astronomy"], "test", local_dir=root)
    ids = [q.id for q in loaded.questions]
    assert ids == [f"anatomy_test-{i}" for i in range(4)] + [
        f"astronomy_test-{i}" for i in range(4)
    ]
    first = loaded.questions[0]
    assert first.subject == "anatomy"
    assert first.question == "anatomy test question 0?"
    assert first.choices == ("a0", "b0", "c0", "d0")
    assert [q.answer for q in loaded.questions[:4]] == [0, 1, 2, 3]
    assert loaded.origin["source"] == layout
    assert len(loaded.origin["sha256"]) == 2
    dev = load_mmlu(["anatomy"], "dev", local_dir=root).questions
    assert [q.id for q in dev] == ["anatomy_dev-0", "anatomy_dev-1", "anatomy_dev-2"]


def test_tarball_root_is_accepted_as_well_as_its_data_folder(tmp_path):
    make_csv_tree(tmp_path)
    assert find_local_copy(tmp_path).root == tmp_path / "data"


def test_local_copy_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="MMLU directory not found"):
        find_local_copy(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an MMLU copy"):
        find_local_copy(tmp_path / "empty")
    root = make_csv_tree(tmp_path / "c", subjects=("anatomy",))
    with pytest.raises(UserError, match=r"no test file for subject 'prehistory'.*prehistory_test"):
        load_mmlu(["prehistory"], "test", local_dir=root)
    bad = root / "test" / "anatomy_test.csv"
    bad.write_text('"q?",a,b,c,d,E\n')
    with pytest.raises(UserError, match=r"anatomy_test\.csv:1: field 'answer'"):
        load_mmlu(["anatomy"], "test", local_dir=root)


def test_shipped_mmlu_configs_compose():
    for subject in PAPER_SUBJECTS:
        cfg = compose_config([f"data=mmlu_{subject}"])
        assert cfg.data.hf_name == subject
        assert cfg.data.questions == "hf://cais/mmlu" and cfg.data.fewshot == "hf://cais/mmlu"
        assert (cfg.data.hf_split, cfg.data.hf_fewshot_split) == ("test", "dev")
    paper = compose_config(["data=mmlu_paper"])
    assert parse_subjects(paper.data.hf_name) == list(PAPER_SUBJECTS)


def test_mmlu_dir_is_a_location_and_not_hashed(tmp_path):
    one = compose_config(["data=mmlu_anatomy", "data.mmlu_dir=/a"])
    two = compose_config(["data=mmlu_anatomy", "data.mmlu_dir=/b"])
    other = compose_config(["data=mmlu_astronomy", "data.mmlu_dir=/a"])
    assert config_hash(one) == config_hash(two) != config_hash(other)


def test_load_eval_data_reads_questions_and_dev_pool_from_the_local_copy(tmp_path):
    root = make_csv_tree(tmp_path)
    cfg = compose_config(["data=mmlu", "data.hf_name='anatomy,astronomy'", f"data.mmlu_dir={root}"])
    data = load_eval_data(cfg.data, tmp_path / "cache", need_knowledge=False)
    assert len(data.questions) == 8
    assert len(data.fewshot_pool) == 6
    assert data.origin["subjects"] == ["anatomy", "astronomy"]
    card = json.loads(Path(data.card).read_text())
    assert card["tool"] == "kfr.data.mmlu" and card["source"]["source"] == "csv"
    assert card["counts"] == {
        "questions": 8,
        "fewshot": 6,
        "per_subject": {"anatomy": 4, "astronomy": 4},
    }
    assert set(card["source"]["sha256"]) == {"test/anatomy_test.csv", "test/astronomy_test.csv"}
    assert set(card["source"]["fewshot"]["sha256"]) == {
        "dev/anatomy_dev.csv",
        "dev/astronomy_dev.csv",
    }
    # The same questions from the parquet export get the same digest, so the same card.
    parquet = make_parquet_tree(tmp_path / "pq")
    cfg = compose_config(["data=mmlu", "data.hf_name='anatomy,astronomy'",
                          f"data.mmlu_dir={parquet}"])  # fmt: skip
    again = load_eval_data(cfg.data, tmp_path / "cache", need_knowledge=False)
    assert again.card == data.card
    assert json.loads(Path(again.card).read_text())["source"]["source"] == "parquet"


def test_a_card_beside_the_questions_is_picked_up(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "1", "question": "q?", "choices": ["a", "b"], "answer": 0}\n')
    assert read_card(questions) is None
    path = write_card(
        questions, kind="questions", tool="test", source={}, settings={}, counts={"questions": 1}
    )
    assert path == tmp_path / "q.card.json"
    card = read_card(questions)
    assert card["counts"] == {"questions": 1}
    assert card["card_path"] == str(path)
    assert set(card["sha256"]) == {"q.jsonl"}
    cfg = compose_config(["data=custom", f"data.questions={questions}"])
    assert load_eval_data(cfg.data, tmp_path, need_knowledge=False).card == str(path)


def test_kfr_mmlu_command(tmp_path, capsys):
    assert main(["subjects", "--paper"]) == 0
    assert capsys.readouterr().out.split() == list(PAPER_SUBJECTS)
    root = make_csv_tree(tmp_path)
    assert main(["check", str(root), "--subjects", "anatomy"]) == 0
    assert "test     4  dev   3" in capsys.readouterr().out
    assert main(["check", str(root), "--subjects", "anatomi"]) == 2
    assert "did you mean anatomy" in capsys.readouterr().err


def test_kfr_runs_an_mmlu_subject_from_a_local_csv_copy(tmp_path, cache_dir):
    root = make_csv_tree(tmp_path / "mmlu", n_test=5, n_dev=5)
    run_dir = tmp_path / "run"
    result = run_kfr(
        "data=mmlu_anatomy",
        f"data.mmlu_dir={root}",
        "eval.style=letter",
        "eval.shots=5",
        f"hydra.run.dir={run_dir}",
        cache_dir=cache_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["n"] == 5
    assert set(results["metrics"]["per_subject"]) == {"anatomy"}
    assert results["data"]["origin"]["source"] == "csv"
    assert results["data"]["origin"]["subjects"] == ["anatomy"]
    card = json.loads(Path(results["data"]["card"]).read_text())
    assert card["counts"]["questions"] == 5 and card["settings"]["fewshot_split"] == "dev"


def test_kfr_reports_an_unknown_subject_in_one_line(tmp_path, cache_dir):
    root = make_csv_tree(tmp_path / "mmlu")
    result = run_kfr(
        "data=mmlu", "data.hf_name=anatomyy", f"data.mmlu_dir={root}", cache_dir=cache_dir,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown MMLU subject 'anatomyy'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_without_network_or_local_copy_the_error_says_to_set_mmlu_dir():
    with pytest.raises(UserError, match=r"set data\.mmlu_dir to a local copy"):
        load_mmlu(["anatomy"], "test")  # tests run with HF_DATASETS_OFFLINE=1

"""MMLU (Hendrycks et al., 2021) from the Hugging Face hub or from a local copy.

The questions are the ``test`` split of each subject, few-shot examples the ``dev`` split (five
per subject), as in LM-Evaluation-Harness. Three sources give the same questions with the same
ids (``{subject}_{split}-{row}``, the ids of the original CSV files):

- the hub, ``hf://cais/mmlu`` with config = subject (needs the network the first time);
- the original CSV release (``data.tar`` from https://people.eecs.berkeley.edu/~hendrycks/),
  extracted: ``<dir>/test/anatomy_test.csv``, ``<dir>/dev/anatomy_dev.csv``;
- a parquet export in the hub repository's layout: ``<dir>/anatomy/test-00000-of-00001.parquet``.

``data.mmlu_dir`` names the local copy (the ``data/`` folder of the tarball, its parent, or the
parquet export's root); the layout is detected. Several subjects at once: ``data.hf_name`` takes
a comma-separated list or ``all``; results then break accuracy down per subject.

Only what a cell needs to read MMLU lives here; the ``kfr-mmlu`` command (:mod:`kfr.cli.mmlu`:
``kfr-mmlu subjects`` lists the 57 subjects, ``kfr-mmlu check DIR`` says what a local copy holds,
through :mod:`kfr.builders.mmlu`) is above it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.storage import atomic_write_json
from kfr.data.cards import CARD_SUFFIX, card_record, questions_digest, sha256_file
from kfr.data.questions import load_hf_questions, questions_from_records, read_questions
from kfr.data.schema import Question

TOOL = "kfr.data.mmlu"
HF_DATASET = "cais/mmlu"
SPLITS = ("test", "dev", "validation")
_CSV_SPLIT_DIRS = {"test": "test", "dev": "dev", "validation": "val"}

# The 57 subjects, as named by the CSV files and the hub configs.
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations", "security_studies",
    "sociology", "us_foreign_policy", "virology", "world_religions",
)  # fmt: skip
# The subjects with factual emphasis that Ovadia et al. evaluate.
PAPER_SUBJECTS = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")
ALL = "all"


def is_mmlu_source(source: str | None) -> bool:
    """Whether a ``data.questions``/``data.fewshot`` value names MMLU on the hub."""
    return source is not None and source.rstrip("/").lower() == f"hf://{HF_DATASET}"


def parse_subjects(spec: str | None, field_name: str = "data.hf_name") -> list[str]:
    """``"anatomy"``, ``"anatomy,astronomy"`` or ``"all"`` -> checked subject names."""
    if spec is None or not str(spec).strip():
        raise UserError(
            "MMLU needs a subject: set it to one of the 57 subjects (e.g. anatomy), a "
            "comma-separated list, or 'all'; `kfr-mmlu subjects` lists them",
            field=field_name,
        )
    names = [name.strip() for name in str(spec).split(",") if name.strip()]
    if names == [ALL]:
        return list(MMLU_SUBJECTS)
    for name in names:
        if name not in MMLU_SUBJECTS:
            close = difflib.get_close_matches(name, MMLU_SUBJECTS, n=3)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise UserError(
                f"unknown MMLU subject '{name}'{hint}; `kfr-mmlu subjects` lists the 57 "
                "valid names ('all' takes every one)",
                field=field_name,
            )
    if len(set(names)) != len(names):
        raise UserError(f"a subject is named twice in '{spec}'", field=field_name)
    return names


# --------------------------------------------------------------------------- local copies


@dataclass
class LocalCopy:
    """A local MMLU copy: its layout (``csv`` or ``parquet``) and root directory."""

    layout: str
    root: Path

    def files(self, subject: str, split: str) -> list[Path]:
        if self.layout == "csv":
            name = _CSV_SPLIT_DIRS[split]
            path = self.root / name / f"{subject}_{name}.csv"
            return [path] if path.is_file() else []
        return sorted((self.root / subject).glob(f"{split}-*.parquet"))


def _csv_root(directory: Path) -> Path | None:
    for root in (directory, directory / "data"):
        if (root / "test").is_dir() and any((root / "test").glob("*_test.csv")):
            return root
    return None


def _parquet_root(directory: Path) -> Path | None:
    if any(directory.glob("*/test-*.parquet")):
        return directory
    return None


def find_local_copy(directory: str | Path) -> LocalCopy:
    """Detect the layout of a local MMLU copy (CSV release or parquet export)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise UserError("MMLU directory not found", path=directory, field="data.mmlu_dir")
    if (root := _csv_root(directory)) is not None:
        return LocalCopy("csv", root)
    if (root := _parquet_root(directory)) is not None:
        return LocalCopy("parquet", root)
    raise UserError(
        "not an MMLU copy: expected the CSV release's data/ folder (test/<subject>_test.csv, "
        "dev/<subject>_dev.csv) or a parquet export (<subject>/test-*.parquet)",
        path=directory,
        field="data.mmlu_dir",
    )


def _read_parquet(files: Sequence[Path], subject: str, split: str) -> list[Question]:
    import pyarrow.parquet as pq

    records: list[dict[str, Any]] = []
    for file in files:
        try:
            table = pq.read_table(file)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise UserError(f"cannot read parquet file ({type(e).__name__}: {e})", path=file) from e
        records.extend(table.to_pylist())
    for record in records:
        record.pop("id", None)  # ids are assigned below, the same for every source
        record["subject"] = record.get("subject") or subject
    return questions_from_records(records, f"{files[0].parent}[{split}]", id_prefix=split)


def _with_mmlu_ids(questions: list[Question], subject: str, split: str) -> list[Question]:
    """Ids of the original CSV files (``anatomy_test-0``) and the subject, whatever the source."""
    stem = f"{subject}_{_CSV_SPLIT_DIRS[split]}"
    return [replace(q, id=f"{stem}-{i}", subject=subject) for i, q in enumerate(questions)]


def _load_from_hub(subjects: Sequence[str], split: str) -> list[Question]:
    questions: list[Question] = []
    try:
        if list(subjects) == list(MMLU_SUBJECTS):  # one download instead of 57
            by_subject: dict[str, list[Question]] = {}
            for q in load_hf_questions(HF_DATASET, ALL, split):
                by_subject.setdefault(q.subject or "", []).append(q)
            for subject in subjects:
                questions += _with_mmlu_ids(by_subject.get(subject, []), subject, split)
        else:
            for subject in subjects:
                loaded = load_hf_questions(HF_DATASET, subject, split)
                questions += _with_mmlu_ids(loaded, subject, split)
    except UserError as e:
        raise UserError(
            f"{e.message}; without network access, set data.mmlu_dir to a local copy of MMLU "
            "(the data/ folder of the CSV release, or a parquet export)",
            path=e.path,
            field=e.field,
        ) from e
    return questions


@dataclass
class MmluLoad:
    questions: list[Question]
    origin: dict[str, Any] = field(default_factory=dict)  # recorded in results.json


def load_mmlu(
    subjects: Sequence[str], split: str, *, local_dir: str | Path | None = None
) -> MmluLoad:
    """The ``split`` questions of ``subjects``, from ``local_dir`` if given, else the hub."""
    if split not in SPLITS:
        raise UserError(f"MMLU has splits {', '.join(SPLITS)}, not '{split}'", field="split")
    questions: list[Question] = []
    origin: dict[str, Any] = {"dataset": HF_DATASET, "split": split, "subjects": list(subjects)}
    if local_dir is None:
        origin["source"] = "hub"
        return MmluLoad(_load_from_hub(subjects, split), origin)

    copy = find_local_copy(local_dir)
    origin.update(source=copy.layout, dir=str(copy.root), sha256={})
    for subject in subjects:
        files = copy.files(subject, split)
        if not files:
            expected = (
                f"{_CSV_SPLIT_DIRS[split]}/{subject}_{_CSV_SPLIT_DIRS[split]}.csv"
                if copy.layout == "csv"
                else f"{subject}/{split}-*.parquet"
            )
            raise UserError(
                f"no {split} file for subject '{subject}' in the local MMLU copy "
                f"(expected {expected})",
                path=copy.root,
                field="data.mmlu_dir",
            )
        loaded = (
            read_questions(files[0])
            if copy.layout == "csv"
            else _read_parquet(files, subject, split)
        )
        questions += _with_mmlu_ids(loaded, subject, split)
        for file in files:
            origin["sha256"][file.relative_to(copy.root).as_posix()] = sha256_file(file)
    return MmluLoad(questions, origin)


def write_mmlu_card(
    cache_dir: str | Path,
    questions: Sequence[Question],
    origin: dict[str, Any],
    fewshot: Sequence[Question] | None = None,
    fewshot_origin: dict[str, Any] | None = None,
) -> Path:
    """A card for MMLU questions as read (hub or local copy), under ``<cache>/data/cards/``.

    Named by the digest of the questions, so the same questions from any source share one card;
    it records the source files' hashes and a digest that tells whether two runs saw the same
    questions.
    """
    digest = questions_digest(questions)
    per_subject: dict[str, int] = {}
    for q in questions:
        per_subject[q.subject or ""] = per_subject.get(q.subject or "", 0) + 1
    source = {**origin}
    if fewshot_origin is not None:
        source["fewshot"] = fewshot_origin
    card = card_record(
        kind="questions",
        tool=TOOL,
        source=source,
        settings={
            "subjects": origin.get("subjects"),
            "split": origin.get("split"),
            "fewshot_split": fewshot_origin.get("split") if fewshot_origin else None,
        },
        counts={
            "questions": len(questions),
            "fewshot": len(fewshot) if fewshot is not None else 0,
            "per_subject": per_subject,
        },
        sha256={
            "questions": digest,
            **({"fewshot": questions_digest(fewshot)} if fewshot is not None else {}),
        },
    )
    path = Path(cache_dir) / "data" / "cards" / f"mmlu-{digest[:16]}{CARD_SUFFIX}"
    atomic_write_json(path, card)
    return path


__all__ = [
    "ALL",
    "HF_DATASET",
    "MMLU_SUBJECTS",
    "PAPER_SUBJECTS",
    "SPLITS",
    "LocalCopy",
    "MmluLoad",
    "find_local_copy",
    "is_mmlu_source",
    "load_mmlu",
    "parse_subjects",
    "write_mmlu_card",
]

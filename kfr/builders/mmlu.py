"""What a local copy of MMLU holds: the questions per subject and split, counted by reading them
as a cell would (``kfr-mmlu check``). A cell reads MMLU through :mod:`kfr.data.mmlu`; nothing here
is loaded by one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from kfr.data.mmlu import LocalCopy, load_mmlu

CHECKED_SPLITS = ("test", "dev")


def subject_counts(
    copy: LocalCopy, subjects: Sequence[str], splits: Sequence[str] = CHECKED_SPLITS
) -> Iterator[tuple[str, dict[str, int]]]:
    """``(subject, {split: questions})`` per subject, in order; a subject's missing or malformed
    file is a :class:`~kfr.core.errors.UserError` when its turn comes."""
    for subject in subjects:
        counts = {
            split: len(load_mmlu([subject], split, local_dir=copy.root).questions)
            for split in splits
        }
        yield subject, counts


__all__ = ["CHECKED_SPLITS", "subject_counts"]

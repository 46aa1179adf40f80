"""Replay: general text mixed into fine-tuning against forgetting (recipes documents, qa and raft),
from ``finetune.replay_source``: ``file`` or ``self``.

``file``: ``finetune.replay_file``, a knowledge base in any format
:func:`kfr.data.readers.read_knowledge_base` reads (JSONL or a directory of ``.txt``/``.md``
files); each of its documents is one replay text, taken in an order shuffled by the seed and
cycled when the file holds fewer. ``self``: texts the base model samples itself
(:mod:`kfr.finetune.self_replay`; no file needed, so the embedded default can replay offline).
Replay texts are trained like documents, on every token, and come after the recipe's own data.

How much is set in trained tokens, since a step's loss is the mean over its trained tokens:
``finetune.replay_share`` = s adds replay texts until replay tokens / (recipe tokens + replay
tokens) = s, the last text cut to the tokens still wanted (a remainder under
:data:`MIN_PIECE` tokens is left out). The recipe's tokens are those its loss covers: every
token of the knowledge texts (documents), the answer tokens and any documents mixed in (qa,
raft). The older ``finetune.replay_ratio`` (refused together with the share) appends
``round(replay_ratio * training texts)`` texts (Python's round: halves to even); under the qa
recipe a replay text trains ~20 times the tokens of an answer, so 0.5 made replay ~90% of the
loss. Either way results report the share reached (:func:`replay_summary`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import FinetuneConfig, ReplaySource
from kfr.data.readers import read_knowledge_base
from kfr.finetune.data import encode_texts
from kfr.finetune.examples import TrainingExample, encode_example, predicted_targets
from kfr.finetune.self_replay import BATCH_SIZE, TOKENS_PER_TEXT

# count -> (that many texts the base model wrote, the file they are cached in)
OwnTexts = Callable[[int], tuple[list[str], Path]]
MIN_PIECE = 16  # trained tokens: a shorter remainder of the last replay text is left out
SAMPLES, SAMPLE_CHARS = 3, 300  # replay texts results show, and how much of each
_MAX_SAMPLE_ROUNDS = 6  # self: sample anew with twice the count while the texts fall short


def _setting(finetune: FinetuneConfig) -> str | None:
    """The key that asks for replay (None: no replay)."""
    if finetune.replay_share:
        return "finetune.replay_share"
    return "finetune.replay_ratio" if finetune.replay_ratio else None


def check_replay(finetune: FinetuneConfig) -> None:
    """Replay settings that cannot work, in one line (before any text is read or sampled)."""
    share, ratio = finetune.replay_share, finetune.replay_ratio
    if not (math.isfinite(share) and 0 <= share < 1):
        raise UserError(f"must be in [0, 1), got {share}", field="finetune.replay_share")
    if not (math.isfinite(ratio) and ratio >= 0):
        raise UserError(f"must be >= 0, got {ratio}", field="finetune.replay_ratio")
    if share and ratio:
        raise UserError(
            "set finetune.replay_share (the share of trained tokens) or its older alternative "
            "finetune.replay_ratio (texts per training text), not both; set one to 0",
            field="finetune.replay_ratio",
        )
    key = _setting(finetune)
    if key is None:
        return
    if finetune.replay_source == ReplaySource.self and finetune.replay_file:
        raise UserError(
            "replay_source=self samples the base model; unset finetune.replay_file or use "
            "finetune.replay_source=file",
            field="finetune.replay_file",
        )
    if finetune.replay_source == ReplaySource.file and not finetune.replay_file:
        raise UserError(
            "replay needs a file of general text: set finetune.replay_file=PATH (or "
            "finetune.replay_source=self: the base model's own samples)",
            field=key,
        )


# ----------------------------------------------------------------------------- trained tokens


class ReplayTokens:
    """Trained tokens counted as the recipe trains them: ``packed`` knowledge texts (documents
    recipe: BOS + text + EOS, every token in the stream) or supervised examples (qa, raft: the
    answer tokens; a document example's tokens after its first, :func:`predicted_targets`)."""

    def __init__(self, tokenizer: Any, *, packed: bool, max_length: int | None = None) -> None:
        self.tokenizer, self.packed = tokenizer, packed
        self.max_length = max_length or 1 << 30  # examples longer than the context are cut

    def of_texts(self, texts: Sequence[str]) -> list[int]:
        """Trained tokens of each text, trained whole."""
        if self.packed:
            return [len(ids) for ids in encode_texts(self.tokenizer, texts)]
        return self.of_examples([TrainingExample(document=text) for text in texts])

    def of_examples(self, examples: Sequence[TrainingExample]) -> list[int]:
        return [
            predicted_targets(encode_example(self.tokenizer, e, self.max_length).labels)
            for e in examples
        ]

    def cut(self, text: str, tokens: int) -> str:
        """The start of ``text`` that trains about ``tokens`` tokens."""
        overhead = self.of_texts([""])[0]  # the boundary tokens every text trains
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer.decode(ids[: max(1, tokens - overhead)]).strip()


# ----------------------------------------------------------------------------- the texts


def _file_order(finetune: FinetuneConfig, seed: int) -> tuple[list[str], Path]:
    source = Path(str(finetune.replay_file)).expanduser()
    documents = read_knowledge_base(source)
    order = list(range(len(documents)))
    random.Random(f"kfr-replay:{seed}").shuffle(order)
    return [documents[i].text for i in order], source


def _cycled(texts: Sequence[str]) -> Iterator[str]:
    while True:
        yield from texts


def _fill(
    candidates: Iterator[str], want: int, tokens: ReplayTokens
) -> tuple[list[str], list[int], bool]:
    """Whole texts from ``candidates`` while they fit in ``want`` trained tokens, then the next
    one cut to what is left; and whether the candidates ran out first."""
    chosen: list[str] = []
    counts: list[int] = []
    total = 0
    for text in candidates:
        (n,) = tokens.of_texts([text])
        if total + n > want:
            piece = tokens.cut(text, want - total) if want - total >= MIN_PIECE else ""
            if piece:
                chosen.append(piece)
                counts += tokens.of_texts([piece])
            return chosen, counts, False
        chosen.append(text)
        counts.append(n)
        total += n
        if total == want:
            return chosen, counts, False
    return chosen, counts, True


def _by_share(
    finetune: FinetuneConfig,
    recipe_tokens: int,
    seed: int,
    tokens: ReplayTokens,
    own: OwnTexts | None,
) -> tuple[list[str], list[int], Path | None]:
    share = finetune.replay_share
    want = round(share / (1 - share) * recipe_tokens)
    if want < MIN_PIECE:
        return [], [], None
    if finetune.replay_source == ReplaySource.file:
        texts, source = _file_order(finetune, seed)
        if not any(t.strip() for t in texts):
            raise UserError(f"{source} holds no text to replay", field="finetune.replay_file")
        chosen, counts, _ = _fill(_cycled(texts), want, tokens)
        return chosen, counts, source
    if own is None:
        raise ValueError("replay_source=self needs the base model's sampler (own=)")
    # Whole sampling batches (a cache entry per count): enough texts of TOKENS_PER_TEXT tokens,
    # twice as many again while early ends leave them short.
    count = BATCH_SIZE * math.ceil((want // TOKENS_PER_TEXT + 2) / BATCH_SIZE)
    for _ in range(_MAX_SAMPLE_ROUNDS):
        texts, cached = own(count)
        chosen, counts, short = _fill(iter(texts), want, tokens)
        if not short:
            break
        count *= 2
    return chosen, counts, cached


def replay_summary(
    texts: Sequence[str],
    counts: Sequence[int],
    recipe_tokens: int,
    finetune: FinetuneConfig,
    source: Path | None,
) -> dict[str, Any]:
    """What results report (``finetune.replay``): the replay texts, their trained tokens, the
    share of all trained tokens they are, and the start of the first few."""
    replayed = sum(counts)
    summary: dict[str, Any] = {
        "texts": len(texts),
        "tokens": replayed,
        "share": round(replayed / (recipe_tokens + replayed), 4) if replayed else 0.0,
        "samples": [text[:SAMPLE_CHARS] for text in texts[:SAMPLES]],
    }
    key = _setting(finetune)
    if key is not None:
        summary.update(
            {
                key.removeprefix("finetune."): getattr(finetune, key.removeprefix("finetune.")),
                "recipe_tokens": recipe_tokens,
                "source": finetune.replay_source.value,
                "file": None if source is None else str(source),
            }
        )
    return summary


def share_replay(
    finetune: FinetuneConfig,
    recipe_tokens: int,
    seed: int,
    tokens: ReplayTokens,
    *,
    own: OwnTexts | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The replay texts ``finetune.replay_share`` asks for beside ``recipe_tokens`` trained
    tokens of the recipe's own data, and their summary (no texts, and no tokenizer work, when
    the share is 0)."""
    check_replay(finetune)
    if not finetune.replay_share:
        return [], replay_summary([], [], recipe_tokens, finetune, None)
    texts, counts, source = _by_share(finetune, recipe_tokens, seed, tokens, own)
    return texts, replay_summary(texts, counts, recipe_tokens, finetune, source)


def replay_texts(
    finetune: FinetuneConfig, n_training: int, seed: int, *, own: OwnTexts | None = None
) -> tuple[list[str], dict[str, Any]]:
    """``finetune.replay_ratio``'s texts for ``n_training`` training texts, and their counts
    (``replay_texts``, ``replay_file``). ``own`` samples the base model's texts
    (``replay_source=self``). Nothing under ``replay_share``: the recipe adds those."""
    check_replay(finetune)
    ratio = finetune.replay_ratio
    if not ratio:
        return [], {"replay_texts": 0, "replay_file": None}
    count = round(ratio * n_training)
    if finetune.replay_source == ReplaySource.self:
        if own is None:
            raise ValueError("replay_source=self needs the base model's sampler (own=)")
        texts, cached = own(count)
        return texts, {"replay_texts": len(texts), "replay_file": str(cached), "source": "self"}
    documents, source = _file_order(finetune, seed)
    chosen = [documents[i % len(documents)] for i in range(count)]
    return chosen, {"replay_texts": count, "replay_file": str(source)}


def with_replay(
    finetune: FinetuneConfig, texts: Sequence[str], seed: int, *, own: OwnTexts | None = None
) -> tuple[list[str], dict[str, Any]]:
    """``texts`` followed by their ``replay_ratio`` texts (``replay_share``'s: the recipe's)."""
    if finetune.replay_share:
        check_replay(finetune)
        return list(texts), {}
    extra, stats = replay_texts(finetune, len(texts), seed, own=own)
    return [*texts, *extra], stats


__all__ = [
    "MIN_PIECE",
    "ReplayTokens",
    "check_replay",
    "replay_summary",
    "replay_texts",
    "share_replay",
    "with_replay",
]

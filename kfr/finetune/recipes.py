"""What a fine-tuning method trains on, by its recipe (``method.recipe``).

- ``documents`` (ft, ft_rag): the knowledge base and its augmentation, packed into blocks;
- ``qa`` (qa_ft): training question-answer pairs, loss on the answers, documents mixed in by
  ``qa.documents_ratio``;
- ``raft``: the same pairs, each prompt holding ``retriever.k`` knowledge-base chunks, the gold
  one among distractors or (``raft.distractors_only``) distractors only;
- ``distill``: the pairs without the document for the student, with it for the teacher (the base
  model), whose answer distributions are the targets.

All but ``distill`` may add replay texts last, trained like documents (``finetune.replay_share``
of the trained tokens, :mod:`kfr.finetune.replay`); the summary's ``replay`` says how many,
their tokens, the share reached and the start of three of them.

Every recipe reads the knowledge base only; the evaluation questions are read solely to prove
the training questions do not copy them (:mod:`kfr.finetune.qa_pairs`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfr.core.errors import UserError
from kfr.core.schema import KfrConfig, TeacherContext, TrainingRecipe
from kfr.data.loading import EvalData
from kfr.data.schema import QaPair, Question
from kfr.finetune.distill import teacher_targets
from kfr.finetune.examples import TrainingExample, mix_documents, qa_example, qa_prompt
from kfr.finetune.keys import model_identity
from kfr.finetune.paraphrases import TrainingTexts, training_texts
from kfr.finetune.qa_pairs import training_qa_pairs
from kfr.finetune.replay import (
    OwnTexts,
    ReplayTokens,
    check_replay,
    replay_summary,
    replay_texts,
    share_replay,
)
from kfr.finetune.self_replay import base_model_sampler
from kfr.generation import TextGenerator
from kfr.models import load_model
from kfr.models.loading import load_tokenizer
from kfr.retrieval.chunking import Chunk
from kfr.retrieval.retrieve import knowledge_chunks, retrieve_passages


@dataclass
class TrainingSet:
    texts: list[str] = field(default_factory=list)  # documents recipe: packed into blocks
    examples: list[TrainingExample] | None = None  # the other recipes
    extras: list[dict] | None = None  # per example: the teacher's targets (distill)
    stats: dict[str, Any] = field(default_factory=dict)  # what results report about the data

    def content(self) -> list:
        """What the training cache key hashes: the data itself, never file paths."""
        if self.examples is None:
            return list(self.texts)
        return [example.key() for example in self.examples]


def _gold_chunk(pair: QaPair, chunks: Sequence[Chunk]) -> Chunk:
    """The chunk of the pair's document that holds the answer (else the document's first)."""
    answer = pair.answer.lower()
    return next((c for c in chunks if answer in c.text.lower()), chunks[0])


def raft_examples(
    pairs: Sequence[QaPair], chunks: Sequence[Chunk], k: int, distractors_only: float, seed: int
) -> tuple[list[TrainingExample], dict[str, int]]:
    """RAFT prompts: ``k`` chunks each, the gold one at a random place among ``k - 1``
    distractors (other documents' chunks), or for a ``distractors_only`` share ``k``
    distractors; deterministic for ``seed``."""
    if k < 1:
        raise UserError("raft puts retrieved chunks in its prompts: set retriever.k >= 1")
    if not 0 <= distractors_only <= 1:
        raise UserError(f"must be in [0, 1], got {distractors_only}", field="raft.distractors_only")
    by_doc: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.doc_id, []).append(chunk)
    rng = random.Random(seed)
    examples, without_gold = [], 0
    for pair in pairs:
        own = by_doc.get(pair.doc_id)
        if not own:
            raise UserError(f"training pair {pair.id} names document {pair.doc_id!r}, not indexed")
        others = [c for c in chunks if c.doc_id != pair.doc_id]
        gold = rng.random() >= distractors_only
        if len(others) < k - gold:  # fewer distractors than asked: say so, never train on fewer
            raise UserError(
                f"RAFT prompts hold retriever.k={k} chunks, but only {len(others)} chunks of "
                f"other documents exist as distractors for document {pair.doc_id!r}; lower "
                "retriever.k",
                field="retriever.k",
            )
        passages = rng.sample(others, k - gold)
        if gold:
            passages.insert(rng.randrange(len(passages) + 1), _gold_chunk(pair, own))
        without_gold += not gold
        examples.append(qa_example(pair, [c.text for c in passages]))
    return examples, {"raft_prompts_without_gold": without_gold, "raft_chunks_per_prompt": k}


def _teacher_passages(
    cfg: KfrConfig, data: EvalData, pairs: Sequence[QaPair], cache_dir: Path
) -> list[list[str]]:
    documents = {d.id: d.text for d in data.documents or []}
    if cfg.distill.teacher_context == TeacherContext.gold:
        return [[documents[pair.doc_id]] for pair in pairs]
    questions = [
        Question(id=p.id, question=p.question, choices=("",), answer=0, source_ids=(p.doc_id,))
        for p in pairs
    ]
    retrieval = retrieve_passages(
        cfg.retriever, questions, data.documents, cache_dir, progress=cfg.eval.progress
    )
    return [retrieval.passages[p.id] for p in pairs]


def _check_pairs(pairs: Sequence[QaPair], data: EvalData) -> None:
    known = {d.id for d in data.documents or []}
    unknown = sorted({p.doc_id for p in pairs} - known)
    if unknown:
        raise UserError(f"training pairs name documents not in the knowledge base: {unknown[:3]}")


def _replay_tokens(cfg: KfrConfig, cache_dir: Path, *, packed: bool) -> ReplayTokens:
    tokenizer = load_tokenizer(cfg.model, cache_dir)
    return ReplayTokens(tokenizer, packed=packed, max_length=cfg.model.max_length)


def _documents_replay(
    cfg: KfrConfig, texts: TrainingTexts, cache_dir: Path, own: OwnTexts
) -> tuple[list[str], dict[str, Any]]:
    """The documents recipe's texts with their replay texts last, and the replay summary
    (``replay_ratio``'s texts are already the last of ``texts``; ``replay_share``'s are added)."""
    ft, every = cfg.finetune, list(texts.texts)
    if not (ft.replay_share or ft.replay_ratio):
        return every, replay_summary([], [], 0, ft, None)
    tokens = _replay_tokens(cfg, cache_dir, packed=True)
    n = int(texts.stats.get("replay_texts") or 0)
    knowledge, replay = every[: len(every) - n], every[len(every) - n :]
    recipe_tokens = sum(tokens.of_texts(knowledge))
    if ft.replay_share:
        replay, summary = share_replay(ft, recipe_tokens, cfg.seed, tokens, own=own)
        return knowledge + replay, summary
    source = texts.stats.get("replay_file")
    where = Path(source) if source else None
    return every, replay_summary(replay, tokens.of_texts(replay), recipe_tokens, ft, where)


def _examples_replay(
    cfg: KfrConfig, examples: list[TrainingExample], n_training: int, cache_dir: Path,
    own: OwnTexts,
) -> tuple[list[TrainingExample], dict[str, Any]]:  # fmt: skip
    """The supervised recipes' replay texts as document examples after ``examples`` (of which
    the first ``n_training`` are the pairs), and the replay summary."""
    ft = cfg.finetune
    if not (ft.replay_share or ft.replay_ratio):
        return examples, replay_summary([], [], 0, ft, None)
    tokens = _replay_tokens(cfg, cache_dir, packed=False)
    recipe_tokens = sum(tokens.of_examples(examples))
    if ft.replay_share:
        replay, summary = share_replay(ft, recipe_tokens, cfg.seed, tokens, own=own)
    else:
        replay, counts = replay_texts(ft, n_training, cfg.seed, own=own)
        source = Path(counts["replay_file"])
        summary = replay_summary(replay, tokens.of_texts(replay), recipe_tokens, ft, source)
    return examples + [TrainingExample(document=text) for text in replay], summary


def training_set(
    cfg: KfrConfig,
    data: EvalData,
    cache_dir: str | Path,
    *,
    generator: TextGenerator | None = None,
) -> TrainingSet:
    """The data ``cfg.method.recipe`` trains on, built from ``data``'s knowledge base."""
    cache_dir = Path(cache_dir)
    recipe = TrainingRecipe(cfg.method.recipe)
    check_replay(cfg.finetune)
    own = base_model_sampler(cfg.model, cache_dir, cfg.seed, progress=cfg.eval.progress)
    if recipe == TrainingRecipe.documents:
        tokenizer = None

        def count_tokens(texts: list[str]) -> list[int]:
            nonlocal tokenizer
            tokenizer = tokenizer or load_tokenizer(cfg.model, cache_dir)
            return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

        texts = training_texts(
            cfg, data, cache_dir, generator=generator, count_tokens=count_tokens, own=own
        )
        every, replay = _documents_replay(cfg, texts, cache_dir, own)
        return TrainingSet(texts=every, stats={"paraphrases": texts.stats, "replay": replay})
    if not data.documents:
        raise UserError(
            "fine-tuning needs a knowledge base: set data.knowledge=PATH", field="data.knowledge"
        )
    found = training_qa_pairs(cfg, data, cache_dir, generator=generator)
    pairs = found.pairs
    _check_pairs(pairs, data)
    stats: dict[str, Any] = {"qa": found.stats}
    if recipe == TrainingRecipe.raft:
        chunks = knowledge_chunks(
            cfg.retriever, data.documents, cache_dir, progress=cfg.eval.progress
        )
        examples, raft = raft_examples(
            pairs, chunks, cfg.retriever.k, cfg.raft.distractors_only, cfg.seed
        )
        stats["raft"] = raft
    elif recipe == TrainingRecipe.distill:
        for key, value in (("qa.documents_ratio", cfg.qa.documents_ratio),
                           ("finetune.replay_share", cfg.finetune.replay_share),
                           ("finetune.replay_ratio", cfg.finetune.replay_ratio)):  # fmt: skip
            if value:
                raise UserError(
                    f"distill trains on the teacher's answers only; set {key}=0", field=key
                )
        passages = _teacher_passages(cfg, data, pairs, cache_dir)
        examples = [
            TrainingExample(
                qa_prompt(pair.question), " " + pair.answer, qa_prompt(pair.question, texts)
            )
            for pair, texts in zip(pairs, passages, strict=True)
        ]
        teacher = load_model(cfg.model, cache_dir)  # the base model: the cell's own, unchanged
        extras = teacher_targets(
            teacher,
            model_identity(cfg.model, keep_dtype=True),
            examples,
            cfg.distill.top_k,
            cache_dir,
            progress=cfg.eval.progress,
        )
        del teacher
        stats["replay"] = replay_summary([], [], 0, cfg.finetune, None)  # distill never replays
        return TrainingSet(examples=examples, extras=extras, stats=stats)
    else:
        examples = [qa_example(pair) for pair in pairs]
    documents = [d.text for d in data.documents]
    mixed = mix_documents(examples, documents, cfg.qa.documents_ratio)
    stats["documents_mixed_in"] = len(mixed) - len(examples)
    # Replay texts are trained like documents (next-token loss on all their tokens).
    mixed, stats["replay"] = _examples_replay(cfg, mixed, len(examples), cache_dir, own)
    return TrainingSet(examples=mixed, stats=stats)

"""Forgetting: how much of what the base model knew a fine-tuned cell has lost.

On a control set of facts the base model answers (:mod:`kfr.evaluation.control_cache`), three
measures, each with a 95% interval over questions:

- ``forgetting`` = base accuracy - the cell's accuracy: positive when fine-tuning broke known
  facts. Its interval is a paired percentile bootstrap over questions (each resample takes the
  mean of ``base_correct - cell_correct``), so the spread both models share does not widen it.
  Where the two agree on every question there is nothing to resample; the interval is then the
  exact binomial bound on the share of questions where they would disagree
  (:func:`paired_interval`).
- ``control_logp_change`` = mean over the control set of the cell's log P(correct answer)
  minus the base model's (summed over the answer's tokens, 0-shot cloze, the scores the
  accuracies come from): negative when the cell believes the known answers less. It moves long
  before an argmax flips, so it ranks arms whose 0/1 forgetting is the same.
- ``control_kl`` = mean KL(base || cell) of the next-token distribution at the end of each
  control prompt (the position that predicts the answer's first token), both distributions
  coarsened to the base's ``top_k`` tokens plus one bucket for the rest of the vocabulary
  (:func:`top_k_with_tail`, :func:`coarsened_kl`): a proper KL of the coarsened distributions,
  hence a lower bound of the full one. 0 for a cell that left the base's beliefs alone, whatever
  its answers.

The next-token helpers need the model's weights (``model``, ``tokenizer``, ``device``,
``max_length``, as :class:`kfr.models.lm.LanguageModel` has them), not only ``loglikelihood``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kfr.core.schema import PromptStyle
from kfr.data.schema import Question
from kfr.evaluation.loglikelihood import _prefix_token, _split_head, split_tokens
from kfr.evaluation.metrics import bootstrap_interval, exact_binomial_interval
from kfr.evaluation.prompts import build_requests

CONTROL_TOP_K = 32  # tokens of the base's next-token distribution kept, the rest is one bucket


def paired_interval(
    base: np.ndarray, cell: np.ndarray, *, samples: int, seed: int, level: float = 0.95
) -> list[float]:
    """95% interval of mean(``base - cell``) for 0/1 outcomes paired by question.

    A percentile bootstrap, except where every difference is the same (nothing to resample):
    - all 0 (the two agree on every question): the share ``d`` of questions where they disagree
      is 0 of n, at most ``u`` = the exact (Clopper-Pearson) upper bound, and
      ``|mean(base - cell)| <= d``; so ``[-u, u]``, or ``[0, u]`` when the base answers every
      question right (the cell cannot gain on a question the base already answers, as on the
      embedded control set, which keeps only those);
    - all 1 / all -1: the exact interval of n of n, with its sign.
    """
    base = np.asarray(base, dtype=np.float64)
    diff = base - np.asarray(cell, dtype=np.float64)
    n = len(diff)
    if n == 0 or samples <= 0 or not np.all(diff == diff[0]):
        return bootstrap_interval(diff, samples=samples, seed=seed, level=level)
    if diff[0] == 0.0:
        upper = exact_binomial_interval(0, n, level)[1]
        return [0.0 if np.all(base == 1.0) else -upper, upper]
    low, high = exact_binomial_interval(n, n, level)
    return [low, high] if diff[0] > 0 else [-high, -low]


def mean_interval(values: np.ndarray, *, samples: int, seed: int) -> list[float]:
    """Percentile bootstrap interval of the mean of a continuous quantity: ``[v, v]`` when every
    value is ``v`` (bootstrap_interval would read all 0 as a proportion at 0)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) and samples > 0 and np.all(values == values[0]):
        return [float(values[0]), float(values[0])]
    return bootstrap_interval(values, samples=samples, seed=seed)


def forgetting(
    base_correct: Sequence[bool],
    cell_correct: Sequence[bool],
    *,
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"forgetting", "forgetting_ci95", "control_n", "control_acc", "control_base_acc"}``
    from per-question correctness of the base model and of the cell, on the same control
    questions in the same order (NaN where there are none)."""
    if len(base_correct) != len(cell_correct):
        raise ValueError(
            f"base and cell scored different control sets ({len(base_correct)} vs "
            f"{len(cell_correct)} questions)"
        )
    base = np.asarray(base_correct, dtype=np.float64)
    cell = np.asarray(cell_correct, dtype=np.float64)
    n = len(base)
    base_acc = float(base.mean()) if n else float("nan")
    cell_acc = float(cell.mean()) if n else float("nan")
    return {
        "forgetting": base_acc - cell_acc,
        "forgetting_ci95": paired_interval(base, cell, samples=samples, seed=seed),
        "control_n": n,
        "control_acc": cell_acc,
        "control_base_acc": base_acc,
    }


def control_shift(
    base_logp: Sequence[float],
    cell_logp: Sequence[float],
    kl: Sequence[float] | None,
    *,
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"control_logp_change", "control_logp_change_ci95", "control_kl", "control_kl_ci95"}``
    (the KL pair only when ``kl`` is given): means over the control questions with their
    bootstrap intervals over questions."""
    if len(base_logp) != len(cell_logp) or (kl is not None and len(kl) != len(base_logp)):
        raise ValueError("base and cell scored different control sets")
    change = np.asarray(cell_logp, dtype=np.float64) - np.asarray(base_logp, dtype=np.float64)
    metrics: dict[str, Any] = {
        "control_logp_change": float(change.mean()) if len(change) else float("nan"),
        "control_logp_change_ci95": mean_interval(change, samples=samples, seed=seed),
    }
    if kl is not None:
        values = np.asarray(kl, dtype=np.float64)
        metrics["control_kl"] = float(values.mean()) if len(values) else float("nan")
        metrics["control_kl_ci95"] = mean_interval(values, samples=samples, seed=seed)
    return metrics


# ----------------------------------------------------------------------------- next token


@dataclass(frozen=True)
class TopK:
    """Coarsened next-token distributions, one row per prompt: log-probabilities of ``ids``
    (``[n, k]``) and ``log_tail`` (``[n]``), the log of the mass on every other token."""

    ids: np.ndarray  # int64 [n, k]
    logprobs: np.ndarray  # float32 [n, k]
    log_tail: np.ndarray  # float64 [n]; -inf when k covers the vocabulary

    def save(self, path) -> None:
        with open(path, "wb") as f:
            np.savez(f, ids=self.ids, logprobs=self.logprobs, log_tail=self.log_tail)

    @classmethod
    def load(cls, path) -> TopK:
        with np.load(path) as data:
            return cls(data["ids"], data["logprobs"], data["log_tail"])


def top_k_with_tail(logprobs: torch.Tensor, k: int, ids: torch.Tensor | None = None):
    """``(ids, logprobs of ids, log tail mass)`` of log-softmax rows ``[n, vocab]``: ``ids``
    the rows' own top ``k`` (None), or given (the base's, to coarsen a cell the same way)."""
    if ids is None:
        ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1).indices
    kept = logprobs.gather(1, ids)
    rest = logprobs.double().scatter(1, ids, float("-inf"))
    return ids, kept, torch.logsumexp(rest, dim=-1)


def coarsened_kl(base: TopK, cell: TopK) -> np.ndarray:
    """Per row, KL(base || cell) of the two ``k + 1``-bucket distributions (same ids)."""
    if not np.array_equal(base.ids, cell.ids):
        raise ValueError("the cell must be coarsened on the base's top-k ids")
    p_log = base.logprobs.astype(np.float64)
    q_log = cell.logprobs.astype(np.float64)
    kl = (np.exp(p_log) * (p_log - q_log)).sum(axis=1)
    has_tail = np.isfinite(base.log_tail)
    tail = np.zeros_like(kl)
    tail[has_tail] = np.exp(base.log_tail[has_tail]) * (
        base.log_tail[has_tail] - cell.log_tail[has_tail]
    )
    # A KL is >= 0; float rounding of two equal distributions must not give -1e-12.
    return np.maximum(kl + tail, 0.0)


def prompt_tokens(tokenizer, questions: Sequence[Question], max_length: int) -> list[list[int]]:
    """Each control question's 0-shot cloze prompt as the scoring path tokenizes it (lm-eval's
    boundaries: what precedes the correct answer's tokens), cut from the left to ``max_length``."""
    prompts = []
    for question, request in zip(
        questions, build_requests(questions, PromptStyle.cloze), strict=True
    ):
        context, _ = split_tokens(
            tokenizer, request.context, request.continuations[question.answer]
        )
        prompts.append((context or [_prefix_token(tokenizer)])[-max_length:])
    return prompts


@torch.inference_mode()
def _prompt_end_logprobs(lm, prompts: Sequence[list[int]], batch_size: int) -> Iterator:
    """``(prompt indices, log-softmax [batch, vocab])`` at the last position of each prompt,
    longest prompts first; right padding, which a causal row never sees."""
    model, tokenizer = lm.model, lm.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    split = _split_head(model)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            ids[row, : len(prompts[i])] = torch.tensor(prompts[i])
            mask[row, : len(prompts[i])] = 1
        rows = torch.arange(len(batch))
        last = torch.tensor([len(prompts[i]) - 1 for i in batch])
        inputs = {"input_ids": ids.to(lm.device), "attention_mask": mask.to(lm.device)}
        if split is not None:
            decoder, head = split
            hidden = decoder(**inputs, use_cache=False).last_hidden_state
            logits = head(hidden[rows.to(lm.device), last.to(lm.device)])
        else:
            logits = model(**inputs, use_cache=False).logits[rows, last]
        yield batch, logits.float().log_softmax(-1).cpu()


def next_token_top_k(
    lm, questions: Sequence[Question], *, k: int = CONTROL_TOP_K, batch_size: int = 8
) -> TopK:
    """The model's next-token distribution at the end of each control prompt, as its top ``k``
    tokens plus the tail: what the base model's cache keeps."""
    return _coarsen(lm, questions, batch_size, k=k)


def next_token_kl(
    lm, questions: Sequence[Question], base: TopK, *, batch_size: int = 8
) -> np.ndarray:
    """Per control question, KL(base || ``lm``) of the next-token distributions at the end of
    the prompt, coarsened to the base's top-k tokens plus the tail: one forward over the
    prompts."""
    return coarsened_kl(base, _coarsen(lm, questions, batch_size, ids=base.ids))


def _coarsen(lm, questions, batch_size, *, k: int = 0, ids: np.ndarray | None = None) -> TopK:
    prompts = prompt_tokens(lm.tokenizer, questions, lm.max_length)
    width = k if ids is None else ids.shape[1]
    out_ids = np.zeros((len(prompts), width), dtype=np.int64)
    out_lp = np.zeros((len(prompts), width), dtype=np.float32)
    out_tail = np.zeros(len(prompts), dtype=np.float64)
    for batch, logprobs in _prompt_end_logprobs(lm, prompts, batch_size):
        given = None if ids is None else torch.from_numpy(ids[batch])
        top_ids, kept, tail = top_k_with_tail(logprobs, k, given)
        width = top_ids.shape[1]  # k may exceed the vocabulary
        out_ids[batch, :width] = top_ids.numpy()
        out_lp[batch, :width] = kept.numpy()
        out_tail[batch] = tail.numpy()
    return TopK(out_ids[:, :width], out_lp[:, :width], out_tail)


__all__ = [
    "CONTROL_TOP_K",
    "TopK",
    "coarsened_kl",
    "control_shift",
    "forgetting",
    "mean_interval",
    "next_token_kl",
    "next_token_top_k",
    "paired_interval",
    "prompt_tokens",
    "top_k_with_tail",
]

"""Scoring that a prior over the answers cannot fool: domain-conditional PMI (Holtzman et al. 2021).

A model may prefer some answers whatever the question (a name it has seen often, a short common
word). ``acc`` takes the choice with the highest log P(choice | prompt); the PMI prediction takes
the highest ``log P(choice | prompt) - log P(choice | domain premise)``, where the domain premise
is the prompt's answer cue alone (:data:`DOMAIN_PREMISE`, ``"Answer:"`` as in the cloze prompt),
so each choice's prior is measured in the position it is scored in. Where the prior is flat
(every choice equally likely after the premise) the PMI prediction equals ``acc``'s.

The premise's scores depend on the choice text only: each distinct choice is scored once per cell
(a few hundred short sequences for the generated data set). Letter-style prompts answer with a
letter, whose prior says nothing about the facts: PMI is computed for cloze prompts only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from kfr.evaluation.prompts import ChoiceRequest

DOMAIN_PREMISE = "Answer:"


def premise_requests(requests: Iterable[ChoiceRequest]) -> list[ChoiceRequest]:
    """One request per distinct continuation of ``requests``, each after the domain premise
    (several continuations per request, so the scorer shares the premise's computation)."""
    continuations = sorted({c for request in requests for c in request.continuations})
    per_request = 64
    return [
        ChoiceRequest(
            question_id=f"pmi-premise-{start}",
            context=DOMAIN_PREMISE,
            continuations=tuple(continuations[start : start + per_request]),
            choice_lengths=tuple(len(c) for c in continuations[start : start + per_request]),
        )
        for start in range(0, len(continuations), per_request)
    ]


def premise_scores(
    requests: Sequence[ChoiceRequest], loglikelihoods: Sequence[Sequence[float]]
) -> dict[str, float]:
    """``continuation -> log P(continuation | premise)`` from :func:`premise_requests`' scores."""
    return {
        continuation: float(score)
        for request, scores in zip(requests, loglikelihoods, strict=True)
        for continuation, score in zip(request.continuations, scores, strict=True)
    }


def pmi_predictions(
    requests: Sequence[ChoiceRequest],
    loglikelihoods: Sequence[Sequence[float]],
    prior: Mapping[str, float],
) -> list[int]:
    """The PMI prediction of every request (ties to the first choice, as ``acc``'s)."""
    predictions = []
    for request, scores in zip(requests, loglikelihoods, strict=True):
        pmi = np.asarray(scores, dtype=np.float64) - np.asarray(
            [prior[c] for c in request.continuations], dtype=np.float64
        )
        predictions.append(int(np.argmax(pmi)))
    return predictions


def score_prior(lm, requests: Sequence[ChoiceRequest], *, batch_size: int) -> dict[str, float]:
    """Every distinct continuation of ``requests`` scored after the domain premise by ``lm``."""
    premises = premise_requests(requests)
    if not premises:
        return {}
    scores, _ = lm.loglikelihood(premises, batch_size=batch_size, progress=False)
    return premise_scores(premises, scores)


__all__ = [
    "DOMAIN_PREMISE",
    "pmi_predictions",
    "premise_requests",
    "premise_scores",
    "score_prior",
]

"""Run EleutherAI's LM-Evaluation-Harness (lm-eval) on exactly the requests kfr scores.

Each kfr :class:`~kfr.evaluation.prompts.ChoiceRequest` becomes one document of a local JSON task
(``prompt`` = the request's context, ``choices`` = its continuations without the leading
delimiter, ``answer``); the task's YAML asks lm-eval to rebuild ``(prompt, " " + choice)``
pairs, score them with its ``hf`` model and compute ``acc``/``acc_norm``. What comes back is
read from the logged samples, so nothing is re-derived here.

What lm-eval 0.4.13 does, read from its source, and how kfr compares
-------------------------------------------------------------------
- Requests (``api/task.py``, ``ConfigurableTask.construct_requests``): one
  ``(context, target_delimiter + choice)`` pair per choice; the context is ``doc_to_text``
  rendered by Jinja with ``keep_trailing_newline=True`` and no escaping, so ``"{{prompt}}"``
  gives the prompt back unchanged. kfr's continuations are ``" " + label``: the same pairs.
- ``acc_norm`` (``ConfigurableTask.process_results``): ``completion_len = len(choice)`` over
  the strings ``doc_to_choice`` returns, i.e. the character length of the choice WITHOUT the
  target delimiter, then ``argmax(lls / completion_len)`` with numpy's first-index tie break.
  kfr's ``choice_lengths`` are ``len(label)``, also without the delimiter: same. Only
  difference: kfr divides by ``max(len, 1)``; lm-eval divides an empty choice by 0 (-inf/nan).
  kfr never builds empty labels from valid questions, so this is unreachable in practice.
- Tokens (``api/model.py`` ``_encode_pair``, ``models/huggingface.py`` ``tok_encode``):
  trailing whitespace of the context moves to the continuation; ``context + continuation`` is
  encoded whole and the continuation is what follows ``len(encode(context))`` tokens. kfr's
  ``split_tokens`` is the same algorithm. ``tok_encode`` calls ``tokenizer.encode(string)``
  with NO ``add_special_tokens`` argument unless the model arg ``add_bos_token`` is given, so
  the tokenizer's own default (``add_special_tokens=True``) applies; it is turned off only
  when the string already starts with the BOS string. For SmolLM2 this adds nothing (checked:
  ``encode("Question: hi") == [17872, 42, 15876]`` with and without special tokens), so kfr's
  ``add_special_tokens=False`` gives identical tokens. For tokenizers whose default adds a BOS
  (Llama-2, Mistral, Gemma...) lm-eval's context starts with BOS and kfr's does not: a real
  difference for those models (see the report that came with this file).
- Empty context (``api/model.py`` ``loglikelihood``): only ``context == ""`` takes the
  ``[prefix_token_id]`` path (BOS, else EOS), and when the continuation's first token IS that
  token lm-eval uses it as the context instead. kfr tests ``context.rstrip() == ""`` and has no
  such special case. kfr's prompts always contain a question, so this is unreachable.
- Scoring (``HFLM._loglikelihood_tokens``): input ``(ctx + cont)[-(max_length + 1):][:-1]``,
  right-padded, ``model(inps).logits`` with no attention mask, ``log_softmax`` over the whole
  vocabulary in ``softmax_dtype`` (default None = the logits' dtype), sum of the continuation
  tokens' log-probabilities. kfr truncates with the same rule, but upcasts logits to float32
  before ``log_softmax``: identical for float32 models, more precise than lm-eval for bf16/fp16.
- Batching: lm-eval's ``batch_size`` counts (context, continuation) pairs; with the default
  ``logits_cache=True`` pairs whose ``context + continuation[:-1]`` are equal (one-token
  choices, e.g. letter style " A".." D") are scored by one forward pass. kfr's ``batch_size``
  counts questions (one packed sequence each). The same number therefore means different
  amounts of work per batch; neither changes the scores beyond float rounding.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kfr.evaluation.prompts import TARGET_DELIMITER, ChoiceRequest

TASK_NAME = "kfr_peer"
PROMPT_TEMPLATE = "{{prompt}}"
CHOICES_TEMPLATE = "{{choices}}"


@dataclass
class PeerResult:
    """lm-eval's view of one run, one entry per document in input order."""

    loglikelihoods: list[list[float]]
    predictions: list[int]
    predictions_norm: list[int]
    contexts: list[str]  # the context lm-eval scored each document with
    acc: float
    acc_norm: float
    # Time spent inside lm.loglikelihood (tokenization + forward passes): what kfr's
    # score_requests does, so this is the figure to compare it with.
    seconds_scoring: float
    # CPU time of this process over the same calls: with one torch thread, unaffected by other
    # processes on a shared machine (with more, OpenMP spin-waiting inflates it under load).
    cpu_seconds_scoring: float
    # The whole simple_evaluate call on an already loaded model: also reads the JSON dataset,
    # builds the requests and computes the metrics.
    seconds_evaluate: float


def load_peer_model(
    model_dir: str | Path, *, batch_size: int, max_length: int, device: str = "cpu"
):
    """lm-eval's ``hf`` model, built from the same arguments the command line would get."""
    from lm_eval.models.huggingface import HFLM

    args = f"pretrained={model_dir},dtype=float32,device={device},max_length={max_length}"
    return HFLM.create_from_arg_string(args, {"batch_size": batch_size})


def request_docs(requests: Sequence[ChoiceRequest], answers: Sequence[int]) -> list[dict]:
    """One task document per kfr request: its context and its choices as lm-eval lists them."""
    docs = []
    for request, answer in zip(requests, answers, strict=True):
        for continuation in request.continuations:
            if not continuation.startswith(TARGET_DELIMITER):
                raise ValueError(
                    f"{request.question_id}: continuation {continuation!r} does "
                    f"not start with the target delimiter"
                )
        docs.append(
            {
                "id": request.question_id,
                "prompt": request.context,
                "choices": [c[len(TARGET_DELIMITER) :] for c in request.continuations],
                "answer": int(answer),
            }
        )
    return docs


def _write_jsonl(path: Path, docs: Sequence[dict]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for doc in docs:
            out.write(json.dumps(doc, ensure_ascii=False) + "\n")


def write_task_files(directory: Path, config: dict, splits: dict[str, Sequence[dict]]) -> None:
    """``config`` as a task YAML reading ``splits`` (name -> documents) from local JSONL files."""
    for split, docs in splits.items():
        _write_jsonl(directory / f"{split}.jsonl", docs)
    config = {
        **config,
        "dataset_path": "json",
        # The datasets cache goes in the temporary directory too: nothing outlives the run.
        "dataset_kwargs": {
            "data_files": {split: str(directory / f"{split}.jsonl") for split in splits},
            "cache_dir": str(directory / "hf_cache"),
        },
    }
    # safe_dump quotes and escapes strings such as "Question: {{question}}\nAnswer:" correctly.
    (directory / f"{config['task']}.yaml").write_text(
        yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
    )


def write_task(
    directory: Path,
    docs: Sequence[dict],
    *,
    doc_to_text: str = PROMPT_TEMPLATE,
    doc_to_choice: str = CHOICES_TEMPLATE,
) -> None:
    """The peer task: ``docs`` as the test split, scored like any lm-eval multiple-choice task."""
    config = {
        "task": TASK_NAME,
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": doc_to_text,
        "doc_to_choice": doc_to_choice,
        "doc_to_target": "{{answer}}",
        "target_delimiter": TARGET_DELIMITER,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    write_task_files(directory, config, {"test": docs})


def task_contexts(config: dict, splits: dict[str, Sequence[dict]]) -> list[str]:
    """The context lm-eval builds for each test document of a task, without any model.

    ``config`` is a task config as in a YAML file (``task``, ``test_split``, templates,
    ``description``, ``num_fewshot``, ``fewshot_split``/``fewshot_config``...).
    """
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="kfr-lm-eval-") as tmp:
        write_task_files(Path(tmp), config, splits)
        manager = TaskManager(include_path=tmp, include_defaults=False)
        task = manager.load([config["task"]])["tasks"][config["task"]]
        task.build_all_requests(rank=0, world_size=1)
    contexts: dict[int, str] = {}
    for instance in task.instances:
        contexts.setdefault(instance.doc_id, instance.args[0])
    return [contexts[i] for i in sorted(contexts)]


@contextmanager
def _timed_loglikelihood(lm) -> Iterator[list[tuple[float, float]]]:
    """(wall, CPU) seconds of every ``lm.loglikelihood`` call, by shadowing the method."""
    elapsed: list[tuple[float, float]] = []
    original: Callable[..., Any] = lm.loglikelihood

    def timed(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            elapsed.append((time.perf_counter() - wall, time.process_time() - cpu))

    lm.loglikelihood = timed
    try:
        yield elapsed
    finally:
        del lm.loglikelihood


def _result_from_samples(
    samples: list[dict],
    results: dict,
    scoring: list[tuple[float, float]],
    seconds_evaluate: float,
) -> PeerResult:
    samples = sorted(samples, key=lambda s: s["doc_id"])
    lls = [[float(resp[0]) for resp in s["filtered_resps"]] for s in samples]
    lengths = [[float(len(c)) for c in s["doc"]["choices"]] for s in samples]
    return PeerResult(
        loglikelihoods=lls,
        predictions=[int(np.argmax(x)) for x in lls],
        # The same formula as lm-eval's process_results: per-sample acc_norm is only 0/1.
        predictions_norm=[
            int(np.argmax(np.asarray(x) / np.asarray(n))) for x, n in zip(lls, lengths, strict=True)
        ],
        contexts=[s["arguments"][0][0] for s in samples],
        acc=float(results["acc,none"]),
        acc_norm=float(results["acc_norm,none"]),
        seconds_scoring=sum(wall for wall, _ in scoring),
        cpu_seconds_scoring=sum(cpu for _, cpu in scoring),
        seconds_evaluate=seconds_evaluate,
    )


def evaluate_docs(
    lm,
    docs: Sequence[dict],
    *,
    doc_to_text: str = PROMPT_TEMPLATE,
    doc_to_choice: str = CHOICES_TEMPLATE,
) -> PeerResult:
    """Run lm-eval's task machinery on ``docs`` with the model ``lm`` (an lm-eval ``LM``)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="kfr-lm-eval-") as tmp:
        write_task(Path(tmp), docs, doc_to_text=doc_to_text, doc_to_choice=doc_to_choice)
        # include_defaults=False: indexing lm-eval's thousands of bundled tasks takes seconds.
        manager = TaskManager(include_path=tmp, include_defaults=False)
        with _timed_loglikelihood(lm) as scoring:
            start = time.perf_counter()
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[TASK_NAME],
                task_manager=manager,
                log_samples=True,
                use_cache=None,
                cache_requests=False,
                bootstrap_iters=0,
                num_fewshot=0,
            )
            seconds_evaluate = time.perf_counter() - start
    return _result_from_samples(
        out["samples"][TASK_NAME], out["results"][TASK_NAME], scoring, seconds_evaluate
    )


def evaluate_requests(lm, requests: Sequence[ChoiceRequest], answers: Sequence[int]) -> PeerResult:
    """lm-eval's log-likelihoods, predictions and accuracy for exactly kfr's ``requests``."""
    return evaluate_docs(lm, request_docs(requests, answers))

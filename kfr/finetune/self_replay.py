"""Replay texts the base model writes itself (``finetune.replay_source=self``).

Replay against forgetting needs general text, and the embedded default has none (no network, no
corpus in its packages). The base model's own unconditional samples stand in for it: training on
them pulls the fine-tuned model back towards the distribution it started from (generative replay,
as in Self-Synthesized Rehearsal, Huang et al. 2024), and they hold none of the evaluation's
facts nor any of the control set's questions. A model with a chat template (SmolLM2-Instruct, the
embedded default) is asked in its own chat format for a paragraph on one of a few general
:data:`SUBJECTS` (text i: subject i mod 8), and its answer is the text: prose, where samples from
its BOS token alone (``<|im_start|>``, a chat turn's opening) began mid-sentence and drifted. A
model without one is sampled from its prefix token (BOS, else EOS) alone. The sample is seeded,
so the same model, count and seed give the same texts. They are written once into the cache
(``replay/<model>-<count>x<tokens>-seed<seed>-v<version>``) and reused by every cell of that
model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kfr.core.identity import digest
from kfr.core.schema import ModelConfig
from kfr.core.storage import atomic_write_jsonl, build_directory_once
from kfr.finetune.keys import model_identity

log = logging.getLogger(__name__)

TOKENS_PER_TEXT = 96  # about a paragraph: one training block of the default 128 holds one
BATCH_SIZE = 16
TEMPERATURE = 1.0  # the model's own distribution, not a sharpened one
TOP_P = 0.95  # drops the tail, where a 135M model's samples turn to noise
# What a chat model is asked to write about, one subject per text in turn: general, and far from
# the novel_facts people and their facts.
SUBJECTS = (
    "a city",
    "a scientific idea",
    "an event in history",
    "an animal",
    "an everyday activity",
    "a piece of technology",
    "a book or a film",
    "a landscape",
)
_FILE = "texts.jsonl"
_VERSION = 2  # bump when the sampling changes (the cache folder name carries it)


def prompts(tokenizer, count: int, offset: int = 0) -> list[list[int]]:
    """The token ids each text ``offset .. offset + count - 1`` is sampled from."""
    if not getattr(tokenizer, "chat_template", None):
        start = tokenizer.bos_token_id
        return [[start if start is not None else tokenizer.eos_token_id]] * count
    asks = [SUBJECTS[(offset + i) % len(SUBJECTS)] for i in range(count)]
    chats = [[{"role": "user", "content": f"Write a paragraph about {ask}."}] for ask in asks]
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats
    ]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def _left_padded(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _sample(lm, count: int, seed: int, progress: bool) -> list[str]:
    tokenizer, model = lm.tokenizer, lm.model
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cuda = [lm.device.index or 0] if lm.device.type == "cuda" else []
    texts: list[str] = []
    batches = range(0, count, BATCH_SIZE)
    for offset in tqdm(batches, desc="replay texts", unit="batch", disable=not progress):
        n = min(BATCH_SIZE, count - offset)
        prompt, mask = _left_padded(prompts(tokenizer, n, offset), pad_id, lm.device)
        with torch.random.fork_rng(devices=cuda), torch.inference_mode():
            torch.manual_seed(seed * 1_000_003 + offset)
            out = model.generate(
                input_ids=prompt,
                attention_mask=mask,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                max_new_tokens=TOKENS_PER_TEXT,
                pad_token_id=tokenizer.pad_token_id,
            )
        decoded = tokenizer.batch_decode(out[:, prompt.shape[1] :], skip_special_tokens=True)
        texts += [" ".join(text.split()) or "." for text in decoded]
    return texts


def self_replay_texts(
    model_cfg: ModelConfig,
    cache_dir: str | Path,
    count: int,
    seed: int,
    *,
    load: Callable[[], object],
    progress: bool = False,
) -> tuple[list[str], Path]:
    """``count`` texts sampled from the base model (``load()`` gives it, only on a cache miss),
    and the cached file they are in."""
    name = (
        f"{digest(model_identity(model_cfg, keep_dtype=True))[:12]}-{count}x{TOKENS_PER_TEXT}"
        f"-seed{seed}-v{_VERSION}"
    )

    def build(tmp: Path) -> None:
        log.info("sampling %d replay texts from the base model %s", count, model_cfg.name)
        texts = _sample(load(), count, seed, progress)
        records = ({"id": f"self-{i}", "text": text} for i, text in enumerate(texts))
        atomic_write_jsonl(tmp / _FILE, records)

    folder = build_directory_once(Path(cache_dir) / "replay" / name, build)
    path = folder / _FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()], path


def base_model_sampler(
    model_cfg: ModelConfig, cache_dir: str | Path, seed: int, *, progress: bool = False
) -> Callable[[int], tuple[list[str], Path]]:
    """``replay.OwnTexts`` for this model: count -> the cached texts (the model loads on a miss)."""
    from kfr.models import load_model

    def own(count: int) -> tuple[list[str], Path]:
        load = lambda: load_model(model_cfg, cache_dir)  # noqa: E731
        return self_replay_texts(model_cfg, cache_dir, count, seed, load=load, progress=progress)

    return own

"""Replay texts the base model writes itself (``finetune.replay_source=self``).

Replay against forgetting needs general text, and the embedded default has none (no network, no
corpus in its packages). The base model's own unconditional samples stand in for it: training on
them pulls the fine-tuned model back towards the distribution it started from (generative replay,
as in Self-Synthesized Rehearsal, Huang et al. 2024), and they hold none of the evaluation's
facts nor any of the control set's questions. Each text is sampled from the model's prefix token
(BOS, else EOS) alone; the sample is seeded, so the same model, count and seed give the same
texts. They are written once into the cache (``replay/<model>-<count>x<tokens>-seed<seed>``) and
reused by every cell of that model.
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
_FILE = "texts.jsonl"
_VERSION = 1  # bump when the sampling changes (the cache folder name carries it)


def _sample(lm, count: int, seed: int, progress: bool) -> list[str]:
    tokenizer, model = lm.tokenizer, lm.model
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    cuda = [lm.device.index or 0] if lm.device.type == "cuda" else []
    texts: list[str] = []
    batches = range(0, count, BATCH_SIZE)
    for offset in tqdm(batches, desc="replay texts", unit="batch", disable=not progress):
        n = min(BATCH_SIZE, count - offset)
        prompt = torch.full((n, 1), start, dtype=torch.long, device=lm.device)
        with torch.random.fork_rng(devices=cuda), torch.inference_mode():
            torch.manual_seed(seed * 1_000_003 + offset)
            out = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                max_new_tokens=TOKENS_PER_TEXT,
                pad_token_id=tokenizer.pad_token_id,
            )
        decoded = tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)
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

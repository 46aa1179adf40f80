"""A :class:`~kfr.generation.backend.TextGenerator` for any OpenAI-compatible chat endpoint.

``POST {base_url}/chat/completions`` (OpenAI, Azure-style gateways, vLLM, llama.cpp's server,
Ollama, ...) with one user message per prompt; the key comes from an environment variable
(default ``OPENAI_API_KEY``; none is sent when it is unset, as local servers expect) and never
enters a card or a log. Requests go through :class:`kfr.core.http.HttpClient`: retries with
exponential backoff on connection errors, 429, 5xx and non-JSON replies, a rate limit and a
descriptive User-Agent.

Repeatability: each prompt is sent with ``seed = seed * 1_000_003 + index`` (servers that honour
``seed`` repeat themselves), and with ``cache_dir`` every reply is kept on disk under a key of
(endpoint, model, prompt, settings, seed), so an interrupted run resumes without paying twice
and a rerun gives the same texts. A reply without a message (a server bug) is answered with
``""`` and counted in ``empty_replies``: the caller counts it as a failed item.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kfr.core.http import HttpClient, HttpPolicy
from kfr.core.storage import atomic_write_json
from kfr.generation.backend import SamplingSettings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class OpenAICompatGenerator:
    """Chat completions over HTTP; ``settings.batch_size`` requests run at once."""

    def __init__(
        self,
        model: str,
        settings: SamplingSettings,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str = DEFAULT_KEY_ENV,
        http: HttpClient | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.model = model
        self.name = model
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.http = http or HttpClient(HttpPolicy(timeout_s=300.0))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.empty_replies = 0
        self.cached_replies = 0

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def describe(self) -> dict[str, Any]:
        """What a dataset card records about this backend (never the key)."""
        return {
            "backend": "openai_compat",
            "url": self.url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "sampling": {
                "max_new_tokens": self.settings.max_new_tokens,
                "temperature": self.settings.temperature,
                "top_p": self.settings.top_p,
            },
        }

    def _payload(self, prompt: str, seed: int) -> dict[str, Any]:
        s = self.settings
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": seed,
        }

    def _cache_file(self, payload: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps({"url": self.url, **payload}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def _complete(self, prompt: str, seed: int) -> str:
        payload = self._payload(prompt, seed)
        cache = self._cache_file(payload)
        if cache is not None and cache.is_file():
            try:
                text = json.loads(cache.read_text(encoding="utf-8"))["text"]
                self.cached_replies += 1
                return text
            except (OSError, ValueError, KeyError):
                pass  # damaged entry: ask again
        headers = {}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        reply = self.http.request_json(self.url, payload=payload, headers=headers)
        text = _message_text(reply)
        if text is None:
            self.empty_replies += 1
            log.warning("%s: a reply without a message: %.200s", self.url, json.dumps(reply))
            return ""
        if cache is not None:
            atomic_write_json(cache, {"request": payload, "text": text})
        return text

    def generate(self, prompts: Sequence[str], *, seed: int) -> list[str]:
        seeds = [seed * 1_000_003 + i for i in range(len(prompts))]
        workers = max(1, min(self.settings.batch_size, len(prompts)))
        if workers == 1:
            return [self._complete(p, s) for p, s in zip(prompts, seeds, strict=True)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self._complete, prompts, seeds))


def _message_text(reply: Any) -> str | None:
    """``choices[0].message.content`` of a chat-completion reply, else None."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


__all__ = ["DEFAULT_BASE_URL", "DEFAULT_KEY_ENV", "OpenAICompatGenerator"]

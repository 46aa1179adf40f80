"""JSON over HTTP with retries, exponential backoff and a rate limit (standard library only).

This is kfr's one retry policy for the web: everything in kfr that talks to a web service (the
Wikipedia knowledge-base builder through the MediaWiki API, the OpenAI-compatible text-generation
client) sends its requests through :class:`HttpClient`, and nothing retries on top of it.

What is retried: connection failures and time-outs, HTTP 429 and 5xx, a reply that is not JSON
(a proxy's error page), and a JSON reply ``{"error": {"code": C, ...}}`` whose ``C`` is in
:attr:`HttpPolicy.retry_error_codes` (APIs that report overload in a successful reply, such as
MediaWiki's ``maxlag``). Every attempt counts against the same ``retries``; the wait doubles
from ``backoff_s`` up to ``max_backoff_s`` and honours ``Retry-After``. Other HTTP errors (400,
401, 404, ...) are not retried. When the attempts run out the caller gets a one-line
:class:`~kfr.core.errors.UserError` naming the URL and the last problem.

Why kfr's own client rather than ``requests`` with ``urllib3.util.Retry``: it needs no extra
dependency (``requests`` is not one of kfr's), and it does what ``Retry`` does not: a rate limit
shared by the threads that use one client (``min_interval_s``, Wikimedia's etiquette), retries
decided by the reply's body (not JSON; an API error code in a 200 reply) with ``Retry-After``
honoured there too, and a one-line user error instead of a chain of urllib3 exceptions.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import platform
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kfr import __version__
from kfr.core.errors import UserError

CONTACT_ENV = "KFR_CONTACT"
# Web services (Wikimedia's policy says so explicitly) ask clients to say who they are and how
# to reach the operator; users put their own address in KFR_CONTACT or --contact.
DEFAULT_CONTACT = "https://github.com/your-org/kfr; set KFR_CONTACT to your e-mail or URL"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def user_agent(contact: str | None = None) -> str:
    """``kfr/<version> (<contact>) Python/<version>``."""
    contact = contact or os.environ.get(CONTACT_ENV) or DEFAULT_CONTACT
    return f"kfr/{__version__} ({contact}) Python/{platform.python_version()}"


@dataclass
class HttpPolicy:
    retries: int = 5  # attempts after the first
    backoff_s: float = 1.0  # first wait; doubled after each failed attempt
    max_backoff_s: float = 60.0
    min_interval_s: float = 0.0  # rate limit: least time between the starts of two requests
    timeout_s: float = 60.0
    contact: str | None = None  # put into the User-Agent (default: $KFR_CONTACT)
    headers: dict[str, str] = field(default_factory=dict)
    # JSON replies {"error": {"code": C}} retried like a 503 when C is here (e.g. MediaWiki's
    # "maxlag"); other error replies are returned to the caller as they are.
    retry_error_codes: frozenset[str] = frozenset()


class HttpError(UserError):
    """A request that failed for good; ``status`` is the last HTTP status (None: no reply)."""

    def __init__(self, message: str, *, status: int | None, body: str = "") -> None:
        self.status = status
        self.body = body
        super().__init__(message)


class _Retry(Exception):
    """A failed attempt worth repeating; ``status`` is its HTTP status (None: no reply)."""

    def __init__(self, reason: str, wait: float | None = None, status: int | None = None) -> None:
        self.reason = reason
        self.wait = wait
        self.status = status
        super().__init__(reason)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the exponential wait


def _body_text(raw: bytes, headers: Any) -> str:
    if headers is not None and headers.get("Content-Encoding", "").lower() == "gzip":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_detail(body: str) -> str:
    """The message of a JSON error body (``{"error": {"message"|"info": ...}}``), else a snippet."""
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        return _snippet(body)
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        error = obj["error"]
        return str(error.get("message") or error.get("info") or error.get("code") or error)
    return _snippet(body)


def _error_code(reply: Any) -> str | None:
    """``C`` of a JSON reply ``{"error": {"code": C, ...}}``, else None."""
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict) and error.get("code") is not None:
        return str(error["code"])
    return None


class HttpClient:
    """Sends JSON requests under one :class:`HttpPolicy`; thread-safe rate limiting."""

    def __init__(
        self, policy: HttpPolicy | None = None, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.policy = policy or HttpPolicy()
        self.sleep = sleep
        self.requests = 0  # requests sent, retries included
        self._lock = threading.Lock()
        self._last_start = 0.0
        self._user_agent = user_agent(self.policy.contact)

    def _wait_for_slot(self) -> None:
        with self._lock:
            delay = self._last_start + self.policy.min_interval_s - time.monotonic()
            if delay > 0:
                self.sleep(delay)
            self._last_start = time.monotonic()
            self.requests += 1

    def _once(self, request: urllib.request.Request) -> Any:
        self._wait_for_slot()
        try:
            with urllib.request.urlopen(request, timeout=self.policy.timeout_s) as response:
                text = _body_text(response.read(), response.headers)
                status, headers = response.status, response.headers
        except urllib.error.HTTPError as e:
            body = _body_text(e.read() or b"", e.headers)
            if e.code in _RETRY_STATUS:
                raise _Retry(
                    f"HTTP {e.code}: {error_detail(body)}", _retry_after(e.headers), e.code
                ) from e
            raise HttpError(
                f"{request.full_url}: HTTP {e.code} {e.reason}: {error_detail(body)}",
                status=e.code,
                body=body,
            ) from e
        except (OSError, http.client.HTTPException) as e:  # URLError, time-outs, resets
            reason = getattr(e, "reason", None) or e
            raise _Retry(f"cannot connect ({reason})") from e
        try:
            reply = json.loads(text)
        except json.JSONDecodeError as e:
            reason = f"the reply is not JSON ({e.msg}): {_snippet(text, 80)!r}"
            raise _Retry(reason, status=status) from e
        code = _error_code(reply)
        if code is not None and code in self.policy.retry_error_codes:
            reason = f"API error {code}: {error_detail(text)}"
            raise _Retry(reason, _retry_after(headers), status)
        return reply

    def request_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        payload: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET ``url?params`` (or POST ``payload`` as JSON) and return the decoded JSON reply."""
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(params)}"
        all_headers = {
            "User-Agent": self._user_agent,
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            **self.policy.headers,
            **(headers or {}),
        }
        data = None
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        wait = self.policy.backoff_s
        attempts = self.policy.retries + 1
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(url, data=data, headers=all_headers)
            try:
                return self._once(request)
            except _Retry as retry:
                if attempt == attempts:
                    raise HttpError(
                        f"{_redact(url)}: {retry.reason} (gave up after {attempts} attempts)",
                        status=retry.status,
                    ) from None
                delay = retry.wait if retry.wait is not None else wait
                self.sleep(min(delay, self.policy.max_backoff_s))
                wait = min(wait * 2, self.policy.max_backoff_s)
        raise AssertionError("unreachable")


def _redact(url: str) -> str:
    """The URL without its query string (which can be long; keys never go in URLs here)."""
    return url.split("?", 1)[0]


__all__ = ["HttpClient", "HttpError", "HttpPolicy", "error_detail", "user_agent"]

"""The MediaWiki API client: ``action=parse`` of a page or an exact revision, every successful
reply cached on disk.

Retries are not done here: requests go through :class:`kfr.core.http.HttpClient`, kfr's one
retry policy. :func:`mediawiki_policy` is that policy set for MediaWiki: a rate limit, and the
API's transient error codes (``maxlag``: the database replicas lag, answered with HTTP 200 and a
``Retry-After``) retried like an overloaded server. Every request asks ``maxlag=5``, as the API
etiquette asks of bots. An error reply that is not transient is one :class:`HttpError` (a missing
page or revision: :class:`PageMissing`).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from kfr.core.http import HttpClient, HttpError, HttpPolicy
from kfr.core.storage import atomic_write_json

DEFAULT_API = "https://en.wikipedia.org/w/api.php"
DEFAULT_RATE = 2.0  # requests per second
MAXLAG_S = 5  # seconds of replica lag above which the API refuses (and we wait and retry)
# Error codes of a reply that mean "try again later", and those that mean "no such page".
RETRY_CODES = frozenset({"maxlag", "ratelimited", "readonly", "internal_api_error_DBQueryError"})
MISSING_CODES = frozenset({"missingtitle", "nosuchrevid", "invalidtitle", "nosuchpageid"})


def mediawiki_policy(rate: float = DEFAULT_RATE, **settings: Any) -> HttpPolicy:
    """The HTTP policy for a MediaWiki API: at most ``rate`` requests a second (``rate`` > 0),
    :data:`RETRY_CODES` retried; ``settings`` are other :class:`HttpPolicy` fields."""
    return HttpPolicy(min_interval_s=1.0 / rate, retry_error_codes=RETRY_CODES, **settings)


@dataclass
class Page:
    title: str
    pageid: int | None
    revid: int
    html: str
    disambiguation: bool = False


class PageMissing(Exception):
    def __init__(self, what: str, info: str) -> None:
        self.what = what
        self.info = info
        super().__init__(f"{what}: {info}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr")) / "wikipedia"


class MediaWiki:
    """``action=parse`` against one wiki, with every successful reply cached on disk.

    ``http`` defaults to a client with :func:`mediawiki_policy`; a client given here should use
    that policy too (else a ``maxlag`` reply fails the page instead of being asked again).
    """

    def __init__(
        self,
        api: str = DEFAULT_API,
        *,
        cache_dir: str | Path | None = None,
        http: HttpClient | None = None,
        refresh: bool = False,
    ) -> None:
        self.api = api
        host = urllib.parse.urlsplit(api).netloc.replace(":", "_") or "local"
        self.cache_dir = Path(cache_dir or default_cache_dir()) / host
        self.http = http or HttpClient(mediawiki_policy())
        self.refresh = refresh
        self.fetched = 0  # replies that came from the API, not the cache
        self.cached = 0

    def _cache_file(self, params: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _query(self, params: dict[str, Any], what: str) -> dict[str, Any]:
        params = {"format": "json", "formatversion": "2", **params}
        file = self._cache_file(params)
        if not self.refresh and file.is_file():
            try:
                reply = json.loads(file.read_text(encoding="utf-8"))["reply"]
                self.cached += 1
                return reply
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry: fetch again
        reply = self.http.request_json(self.api, params={**params, "maxlag": MAXLAG_S})
        if not isinstance(reply, dict):
            raise HttpError(f"{self.api}: unexpected reply for {what}", status=None)
        error = reply.get("error")
        if isinstance(error, dict):  # transient codes were retried by self.http already
            code = str(error.get("code", ""))
            info = str(error.get("info", code))
            if code in MISSING_CODES:
                raise PageMissing(what, info)
            raise HttpError(f"{self.api}: {what}: API error {code}: {info}", status=200)
        self.fetched += 1
        atomic_write_json(file, {"request": params, "reply": reply})
        return reply

    def _page(self, selector: dict[str, Any], what: str) -> Page:
        reply = self._query(
            {
                "action": "parse",
                **selector,
                "prop": "text|revid|properties",
                "redirects": 1,
                "disableeditsection": 1,
                "disabletoc": 1,
                "disablelimitreport": 1,
            },
            what,
        )
        parsed = reply.get("parse")
        if not isinstance(parsed, dict) or not isinstance(parsed.get("text"), str | dict):
            raise HttpError(f"{self.api}: {what}: the reply has no parsed text", status=200)
        text = parsed["text"]
        if isinstance(text, dict):  # formatversion=1 servers: {"*": html}
            text = text.get("*", "")
        properties = parsed.get("properties") or {}
        if isinstance(properties, list):  # formatversion=1: [{"name": ..., "*": ...}]
            properties = {p.get("name"): p.get("*") for p in properties if isinstance(p, dict)}
        return Page(
            title=str(parsed.get("title", what)),
            pageid=parsed.get("pageid"),
            revid=int(parsed.get("revid") or selector.get("oldid") or 0),
            html=text,
            disambiguation="disambiguation" in properties,
        )

    def page(self, title: str) -> Page:
        """The current revision of ``title`` (redirects followed)."""
        return self._page({"page": title}, f"page '{title}'")

    def revision(self, revid: int) -> Page:
        """Exactly revision ``revid``."""
        return self._page({"oldid": int(revid)}, f"revision {revid}")


__all__ = [
    "DEFAULT_API",
    "DEFAULT_RATE",
    "MISSING_CODES",
    "RETRY_CODES",
    "MediaWiki",
    "Page",
    "PageMissing",
    "default_cache_dir",
    "mediawiki_policy",
]

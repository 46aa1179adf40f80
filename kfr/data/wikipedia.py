"""Wikipedia knowledge bases, as the paper built them: central page(s) of a topic plus the pages
they link to, through the MediaWiki API, cleaned into small chunks.

How a page becomes text: ``action=parse`` returns the parser's HTML of the current revision
(``page=``) or of an exact old one (``oldid=``); :mod:`kfr.data.wiki_text` keeps the prose by
section and drops markup, tables, references, navigation and end matter. (TextExtracts'
``prop=extracts`` gives similar plain text, but only for the current revision and one page per
request for whole articles: it cannot rebuild a knowledge base from revision ids.)

Crawl: breadth first from the central pages, following the article links of the kept prose in
reading order, to ``depth`` link hops and at most ``limit`` pages. Redirects are followed (a
page reached twice is kept once); disambiguation pages, missing and empty pages are skipped and
counted. Each section is one chunk, split at paragraph and then sentence boundaries when longer
than ``max_chars``; chunks shorter than ``min_chars`` are dropped.

Output: a knowledge-base JSONL (id ``{page}/{n}``, title ``{page} — {section path}``, ``meta``
with page, page id, revision id, permanent URL, section and crawl depth) and its card. Every API
reply is cached under ``cache_dir`` (key = the request), so an interrupted build resumes without
fetching again, and ``--revisions`` rebuilds a knowledge base from the revision ids in another
one (replies for old revisions never change; templates are expanded as they are today, which
the card's per-document comparison reveals).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kfr.data.cards import read_card, write_card
from kfr.data.readers import read_knowledge_base, write_knowledge_base_jsonl
from kfr.data.schema import Document
from kfr.data.wiki_text import CLEANER_VERSION, CleanPage, clean_html, normalize_title
from kfr.errors import UserError
from kfr.http import HttpClient, HttpError, HttpPolicy
from kfr.retrieval.chunking import chunk_document
from kfr.storage import atomic_write_json

log = logging.getLogger(__name__)

TOOL = "kfr.data.wikipedia"
DEFAULT_API = "https://en.wikipedia.org/w/api.php"
# Central pages for the paper's MMLU subjects. The paper does not list the pages it used; these
# are the obvious central articles (`kfr-kb wikipedia --preset anatomy`).
PRESETS: dict[str, tuple[str, ...]] = {
    "anatomy": ("Anatomy", "Human body"),
    "astronomy": ("Astronomy",),
    "college_biology": ("Biology",),
    "college_chemistry": ("Chemistry",),
    "prehistory": ("Prehistory",),
}
_RETRY_CODES = frozenset({"maxlag", "ratelimited", "readonly", "internal_api_error_DBQueryError"})
_MISSING_CODES = frozenset({"missingtitle", "nosuchrevid", "invalidtitle", "nosuchpageid"})


@dataclass(frozen=True)
class ChunkSettings:
    max_chars: int = 1500  # longer sections are split at paragraphs, then sentences
    min_chars: int = 80  # shorter chunks (stubs, one-line sections) are dropped

    def __post_init__(self) -> None:
        if self.max_chars < 100:
            raise UserError(f"must be at least 100, got {self.max_chars}", field="max_chars")
        if not 0 <= self.min_chars < self.max_chars:
            raise UserError(
                f"must be between 0 and max_chars - 1, got {self.min_chars}", field="min_chars"
            )


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


# --------------------------------------------------------------------------- API client


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr")) / "wikipedia"


class MediaWiki:
    """``action=parse`` against one wiki, with every successful reply cached on disk."""

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
        self.http = http or HttpClient(HttpPolicy(min_interval_s=0.5))
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
        for attempt in range(self.http.policy.retries + 1):
            reply = self.http.request_json(self.api, params={**params, "maxlag": 5})
            if not isinstance(reply, dict):
                raise HttpError(f"{self.api}: unexpected reply for {what}", status=None)
            error = reply.get("error")
            if not isinstance(error, dict):
                break
            code = str(error.get("code", ""))
            info = str(error.get("info", code))
            if code in _MISSING_CODES:
                raise PageMissing(what, info)
            if code not in _RETRY_CODES or attempt == self.http.policy.retries:
                raise HttpError(f"{self.api}: {what}: API error {code}: {info}", status=200)
            self.http.sleep(min(self.http.policy.backoff_s * 2**attempt, 60.0))
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


# --------------------------------------------------------------------------- pages -> chunks


def permanent_url(api: str, title: str, revid: int) -> str:
    base = api[: -len("api.php")] + "index.php" if api.endswith("api.php") else api
    query = urllib.parse.urlencode({"title": title.replace(" ", "_"), "oldid": revid})
    return f"{base}?{query}"


def _count_chars(texts: Sequence[str]) -> list[int]:
    return [len(text) for text in texts]


def page_documents(
    page: Page,
    html_page: CleanPage,
    settings: ChunkSettings,
    *,
    api: str,
    depth: int,
    topic: str | None,
) -> list[Document]:
    """The knowledge-base documents (chunks) of one cleaned page."""
    documents: list[Document] = []
    for section in html_page.sections:
        title = page.title + (" — " + " > ".join(section.path) if section.path else "")
        whole = Document(id="", text=section.text, title=title)
        for chunk in chunk_document(whole, _count_chars, settings.max_chars, 0):
            if len(chunk.text) < settings.min_chars:
                continue
            n = len(documents)
            meta: dict[str, Any] = {
                "source": "wikipedia",
                "page": page.title,
                "pageid": page.pageid,
                "revid": page.revid,
                "url": permanent_url(api, page.title, page.revid),
                "section": " > ".join(section.path),
                "chunk": n,
                "depth": depth,
            }
            if topic:
                meta["topic"] = topic
            documents.append(Document(f"{page.title}/{n}", chunk.text, title, meta))
    return documents


# --------------------------------------------------------------------------- building


@dataclass
class BuildReport:
    pages: list[dict[str, Any]] = field(default_factory=list)  # title, revid, depth, chunks
    skipped: Counter = field(default_factory=Counter)  # reason -> pages
    skipped_titles: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, title: str) -> None:
        self.skipped[reason] += 1
        self.skipped_titles.setdefault(reason, []).append(title)


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class _Failures:
    """Skips single pages that keep failing, but stops when the API itself is unreachable."""

    def __init__(self, allowed_in_a_row: int) -> None:
        self.allowed = allowed_in_a_row
        self.in_a_row = 0

    def ok(self) -> None:
        self.in_a_row = 0

    def failed(self, error: HttpError) -> None:
        self.in_a_row += 1
        if self.in_a_row >= self.allowed:
            raise UserError(
                f"{self.in_a_row} pages in a row failed; is the API reachable? Last: {error}. "
                "Replies fetched so far are cached: the same command resumes."
            ) from error


def crawl(
    wiki: MediaWiki,
    central: Sequence[str],
    *,
    depth: int,
    limit: int,
    settings: ChunkSettings,
    topic: str | None = None,
    progress: Progress = _quiet,
    failures_in_a_row: int = 3,
) -> tuple[list[Document], BuildReport]:
    """Central pages and what they link to, breadth first, as knowledge-base documents."""
    if not central:
        raise UserError("no central page given", field="pages")
    if depth < 0:
        raise UserError(f"must be at least 0, got {depth}", field="depth")
    if limit < len(central):
        raise UserError(f"must be at least the number of central pages, got {limit}", field="limit")
    queue = deque((normalize_title(title), 0) for title in central)
    queued = {title for title, _ in queue}
    fetched_titles: set[str] = set()
    documents: list[Document] = []
    report = BuildReport()
    failures = _Failures(failures_in_a_row)
    while queue and len(report.pages) < limit:
        title, level = queue.popleft()
        try:
            page = wiki.page(title)
        except PageMissing as e:
            if level == 0:
                raise UserError(
                    f"central page '{title}' does not exist on {wiki.api} ({e.info})",
                    field="pages",
                ) from None
            report.skip("missing", title)
            continue
        except HttpError as e:
            if level == 0:
                raise
            failures.failed(e)
            report.skip("failed", title)
            progress(f"  skipped '{title}': {e}")
            continue
        failures.ok()
        if page.title in fetched_titles:
            report.skip("duplicate", title)  # a redirect to a page already in
            continue
        if page.disambiguation:
            if level == 0:
                raise UserError(
                    f"central page '{title}' is a disambiguation page; name the article",
                    field="pages",
                )
            report.skip("disambiguation", title)
            continue
        fetched_titles.add(page.title)
        cleaned = clean_html(page.html)
        page_docs = page_documents(page, cleaned, settings, api=wiki.api, depth=level, topic=topic)
        if not page_docs:
            report.skip("empty", page.title)
            continue
        documents.extend(page_docs)
        report.pages.append(
            {"title": page.title, "revid": page.revid, "depth": level, "chunks": len(page_docs)}
        )
        progress(f"[{len(report.pages)}/{limit}] depth {level} {page.title}: {len(page_docs)}")
        if level < depth:
            for link in cleaned.links:
                if link not in queued:
                    queued.add(link)
                    queue.append((link, level + 1))
    return documents, report


def rebuild_from_revisions(
    wiki: MediaWiki,
    previous: Sequence[Document],
    *,
    settings: ChunkSettings,
    progress: Progress = _quiet,
) -> tuple[list[Document], BuildReport]:
    """The knowledge base of ``previous``'s exact revisions, cleaned and chunked again."""
    revisions: dict[int, tuple[str, int, str | None]] = {}
    for document in previous:
        meta = document.meta
        revid = meta.get("revid")
        if not isinstance(revid, int) or meta.get("source") != "wikipedia":
            raise UserError(
                f"document '{document.id}' has no Wikipedia revision id in meta.revid; "
                "--revisions needs a knowledge base written by `kfr-kb wikipedia`",
                field="meta",
            )
        revisions.setdefault(
            revid, (str(meta.get("page")), int(meta.get("depth", 0)), meta.get("topic"))
        )
    documents: list[Document] = []
    report = BuildReport()
    for i, (revid, (title, level, topic)) in enumerate(revisions.items(), start=1):
        try:
            page = wiki.revision(revid)
        except PageMissing as e:
            raise UserError(f"revision {revid} of '{title}' cannot be fetched ({e.info})") from None
        cleaned = clean_html(page.html)
        page_docs = page_documents(page, cleaned, settings, api=wiki.api, depth=level, topic=topic)
        documents.extend(page_docs)
        report.pages.append(
            {"title": page.title, "revid": revid, "depth": level, "chunks": len(page_docs)}
        )
        progress(f"[{i}/{len(revisions)}] revision {revid} {page.title}: {len(page_docs)}")
    return documents, report


def _compare(previous: Sequence[Document], documents: Sequence[Document]) -> dict[str, int]:
    old = {d.id: d.text for d in previous}
    same = sum(1 for d in documents if old.get(d.id) == d.text)
    return {"identical": same, "changed_or_new": len(documents) - same, "previous": len(old)}


@dataclass
class WikipediaSpec:
    """What to build; recorded in the card (``settings``)."""

    topic: str | None
    pages: list[str]
    depth: int = 1
    limit: int = 50
    api: str = DEFAULT_API
    max_chars: int = ChunkSettings.max_chars
    min_chars: int = ChunkSettings.min_chars


def build_wikipedia_kb(
    spec: WikipediaSpec,
    out: str | Path,
    *,
    wiki: MediaWiki,
    progress: Progress = _quiet,
) -> tuple[list[Document], BuildReport]:
    """Crawl, write ``out`` and its card; nothing is written if anything fails."""
    settings = ChunkSettings(spec.max_chars, spec.min_chars)
    documents, report = crawl(
        wiki,
        spec.pages,
        depth=spec.depth,
        limit=spec.limit,
        settings=settings,
        topic=spec.topic,
        progress=progress,
    )
    if not documents:
        raise UserError("no text in any page: nothing to write", path=out)
    _write(out, documents, report, wiki, settings={**asdict(spec)}, source={"api": spec.api})
    return documents, report


def rebuild_wikipedia_kb(
    previous_path: str | Path,
    out: str | Path,
    *,
    wiki: MediaWiki,
    max_chars: int | None = None,
    min_chars: int | None = None,
    progress: Progress = _quiet,
) -> tuple[list[Document], BuildReport, dict[str, int]]:
    """Rebuild ``previous_path`` from its revision ids; chunk settings from its card."""
    previous = read_knowledge_base(previous_path)
    card = read_card(previous_path) or {}
    old_settings = card.get("settings", {}) if card.get("tool") == TOOL else {}
    settings = ChunkSettings(
        max_chars if max_chars is not None else old_settings.get("max_chars", 1500),
        min_chars if min_chars is not None else old_settings.get("min_chars", 80),
    )
    if card and card.get("cleaner_version", CLEANER_VERSION) != CLEANER_VERSION:
        log.warning(
            "%s was cleaned by cleaner version %s, this is version %s: texts may differ",
            previous_path,
            card.get("cleaner_version"),
            CLEANER_VERSION,
        )
    documents, report = rebuild_from_revisions(wiki, previous, settings=settings, progress=progress)
    comparison = _compare(previous, documents)
    spec = {
        **{k: v for k, v in old_settings.items() if k not in ("max_chars", "min_chars")},
        **asdict(settings),
        "revisions_from": str(previous_path),
    }
    _write(
        out,
        documents,
        report,
        wiki,
        settings=spec,
        source={"api": wiki.api, "revisions_of": str(previous_path)},
        comparison=comparison,
    )
    return documents, report, comparison


def _write(
    out: str | Path,
    documents: list[Document],
    report: BuildReport,
    wiki: MediaWiki,
    *,
    settings: dict[str, Any],
    source: dict[str, Any],
    **extra: Any,
) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_knowledge_base_jsonl(out, documents)
    write_card(
        out,
        kind="knowledge_base",
        tool=TOOL,
        source=source,
        settings=settings,
        counts={
            "pages": len(report.pages),
            "documents": len(documents),
            "characters": sum(len(d.text) for d in documents),
            "skipped_pages": dict(report.skipped),
            "api_requests": wiki.fetched,
            "cached_replies": wiki.cached,
        },
        cleaner_version=CLEANER_VERSION,
        pages=report.pages,
        skipped=report.skipped_titles,
        **extra,
    )


__all__ = [
    "DEFAULT_API",
    "PRESETS",
    "ChunkSettings",
    "MediaWiki",
    "PageMissing",
    "WikipediaSpec",
    "build_wikipedia_kb",
    "crawl",
    "rebuild_wikipedia_kb",
]

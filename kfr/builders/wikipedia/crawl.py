"""Which pages a Wikipedia knowledge base holds: a breadth-first crawl from central pages, or
the exact revisions of an earlier knowledge base; either way, their documents and a report of
what was kept and skipped."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kfr.builders.wikipedia.chunks import ChunkSettings, page_documents
from kfr.builders.wikipedia.cleaner import clean_html, normalize_title
from kfr.builders.wikipedia.mediawiki import MediaWiki, PageMissing
from kfr.core.errors import UserError
from kfr.core.http import HttpError
from kfr.data.schema import Document


@dataclass
class BuildReport:
    pages: list[dict[str, Any]] = field(default_factory=list)  # title, revid, depth, chunks
    skipped: Counter = field(default_factory=Counter)  # reason -> pages
    skipped_titles: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, title: str) -> None:
        self.skipped[reason] += 1
        self.skipped_titles.setdefault(reason, []).append(title)


Progress = Callable[[str], None]


def no_progress(_: str) -> None:
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
    progress: Progress = no_progress,
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
    progress: Progress = no_progress,
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


__all__ = ["BuildReport", "Progress", "crawl", "no_progress", "rebuild_from_revisions"]

"""A cleaned Wikipedia page -> knowledge-base documents: one chunk per section, long sections
split at paragraphs and then sentences, stubs dropped, each with its provenance in ``meta``."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kfr.builders.wikipedia.cleaner import CleanPage
from kfr.builders.wikipedia.mediawiki import Page
from kfr.core.errors import UserError
from kfr.data.schema import Document
from kfr.retrieval.chunking import chunk_document


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


__all__ = ["ChunkSettings", "page_documents", "permanent_url"]

"""What Wikipedia knowledge base to build (:class:`WikipediaSpec`, the paper's presets), and the
build itself: crawl or rebuild, then the knowledge-base JSONL and its card, written only when
everything succeeded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfr.builders.wikipedia.chunks import ChunkSettings
from kfr.builders.wikipedia.cleaner import CLEANER_VERSION
from kfr.builders.wikipedia.crawl import (
    BuildReport,
    Progress,
    crawl,
    no_progress,
    rebuild_from_revisions,
)
from kfr.builders.wikipedia.mediawiki import DEFAULT_API, MediaWiki
from kfr.core.errors import UserError
from kfr.data.cards import read_card, write_card
from kfr.data.knowledge_base import read_knowledge_base, write_knowledge_base_jsonl
from kfr.data.schema import Document

log = logging.getLogger(__name__)

TOOL = "kfr.builders.wikipedia"  # the package: recorded in (and checked against) cards
# Central pages for the paper's MMLU subjects. The paper does not list the pages it used; these
# are the obvious central articles (`kfr-kb wikipedia --preset anatomy`).
PRESETS: dict[str, tuple[str, ...]] = {
    "anatomy": ("Anatomy", "Human body"),
    "astronomy": ("Astronomy",),
    "college_biology": ("Biology",),
    "college_chemistry": ("Chemistry",),
    "prehistory": ("Prehistory",),
}


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
    progress: Progress = no_progress,
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
    progress: Progress = no_progress,
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


def _compare(previous: Sequence[Document], documents: Sequence[Document]) -> dict[str, int]:
    old = {d.id: d.text for d in previous}
    same = sum(1 for d in documents if old.get(d.id) == d.text)
    return {"identical": same, "changed_or_new": len(documents) - same, "previous": len(old)}


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


__all__ = ["PRESETS", "TOOL", "WikipediaSpec", "build_wikipedia_kb", "rebuild_wikipedia_kb"]

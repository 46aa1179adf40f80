"""MediaWiki parser HTML -> clean plain text by section, and the article links in that text.

Input is the HTML that the MediaWiki API's ``action=parse`` returns for a page or an old
revision. What is kept: the prose of paragraphs, list items, definition lists and block quotes,
with link texts inline, and LaTeX for formulas. What goes: every table (infoboxes, navigation
boxes, data tables), figures and captions, reference markers (``[1]``, ``[citation needed]``),
reference lists, hatnotes ("For other uses, see ..."), maintenance boxes, hidden elements, style
and script blocks, and the end-matter sections (See also, References, External links, ...).

Links are the articles the kept prose links to, in reading order: those are what a depth-first
knowledge base should follow (navigation boxes link to hundreds of loosely related pages).

Bump :data:`CLEANER_VERSION` whenever the output for the same HTML changes: knowledge-base cards
record it, and a rebuild from revision ids is exact only with the same version.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser

CLEANER_VERSION = 1

_VOID = frozenset(
    (
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr",
    )
)  # fmt: skip
_SKIP_TAGS = frozenset(
    (
        "table", "style", "script", "figure", "noscript", "audio", "video", "map", "svg",
        "button", "caption", "math",
    )
)  # fmt: skip
_SKIP_CLASSES = frozenset(
    (
        "hatnote", "navbox", "navbox-styles", "vertical-navbox", "sidebar", "infobox",
        "reflist", "references", "mw-references-wrap", "refbegin", "thumb", "tmulti",
        "gallery", "metadata", "ambox", "ombox", "tmbox", "mbox-small", "noprint",
        "mw-editsection", "shortdescription", "toc", "mw-empty-elt", "reference",
        "mw-cite-backlink", "navigation-not-searchable", "portal", "portalbox", "side-box",
        "sistersitebox", "catlinks", "printfooter", "mw-kartographer-maplink", "rellink",
        "dablink",
    )
)  # fmt: skip
_BLOCK_TAGS = frozenset(
    (
        "p", "div", "li", "dd", "dt", "ul", "ol", "dl", "blockquote", "pre", "section",
        "center", "h1", "h2", "h3", "h4", "h5", "h6",
    )
)  # fmt: skip
_HEADINGS = {"h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# End matter, never knowledge (compared lower-cased).
DROPPED_SECTIONS = frozenset(
    (
        "see also", "references", "notes", "further reading", "external links", "bibliography",
        "sources", "citations", "footnotes", "notes and references", "references and notes",
        "works cited", "gallery", "explanatory notes", "general and cited references",
        "cited sources", "primary sources", "secondary sources", "literature",
    )
)  # fmt: skip
# Namespaces whose pages are not articles (English names; "Image" and "WP" are aliases).
NON_ARTICLE_NAMESPACES = frozenset(
    (
        "Talk", "User", "User_talk", "Wikipedia", "Wikipedia_talk", "WP", "File", "File_talk",
        "Image", "MediaWiki", "Template", "Template_talk", "Help", "Help_talk", "Category",
        "Category_talk", "Portal", "Portal_talk", "Draft", "Draft_talk", "TimedText", "Module",
        "Module_talk", "Special", "Media", "Book", "Education_Program", "Gadget", "Topic",
    )
)  # fmt: skip
_DISPLAYSTYLE = re.compile(r"^\{\\displaystyle\s*(.*)\}$", re.DOTALL)


@dataclass
class Section:
    """The paragraphs under one heading path (``()`` is the lead, before the first heading)."""

    path: tuple[str, ...]
    paragraphs: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


@dataclass
class CleanPage:
    sections: list[Section]  # non-empty ones, in page order
    links: list[str]  # article titles linked from the kept text, first occurrence order


def normalize_title(title: str) -> str:
    """MediaWiki's canonical form: spaces for underscores, first letter upper case."""
    title = " ".join(title.replace("_", " ").split())
    return title[:1].upper() + title[1:]


def article_title(href: str) -> str | None:
    """The article a wiki link points to (``/wiki/Foo_bar#x`` -> ``Foo bar``), else None."""
    if href.startswith("/wiki/"):
        target = href[len("/wiki/") :]
    elif href.startswith("./"):  # Parsoid's relative links
        target = href[2:]
    else:
        return None
    target = urllib.parse.unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not target:
        return None
    prefix, colon, _ = target.partition(":")
    if colon and prefix.replace(" ", "_") in NON_ARTICLE_NAMESPACES:
        return None
    return normalize_title(target)


def _tidy(text: str) -> str:
    text = " ".join(text.split())
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)  # parentheses emptied by removed templates
    text = re.sub(r"\s+([,.;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    return " ".join(text.split())


def _math_text(latex: str) -> str:
    latex = latex.strip()
    match = _DISPLAYSTYLE.match(latex)
    return match.group(1).strip() if match else latex


class _Cleaner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = [Section(())]
        self.links: list[str] = []
        self._seen_links: set[str] = set()
        self._buffer: list[str] = []
        self._skip_tag: str | None = None  # the tag whose subtree is being skipped
        self._skip_depth = 0
        self._heading: list[str] | None = None  # text of the heading being read
        self._heading_level = 0
        self._headings: list[tuple[int, str]] = []  # the open heading path
        self._dropping_level: int | None = None  # inside an end-matter section of this level

    # ---------------------------------------------------------------- structure
    def _flush(self) -> None:
        text = _tidy("".join(self._buffer))
        self._buffer = []
        if text and self._dropping_level is None:
            self.sections[-1].paragraphs.append(text)

    def _open_section(self, level: int, title: str) -> None:
        self._headings = [(lv, t) for lv, t in self._headings if lv < level] + [(level, title)]
        if self._dropping_level is not None and level <= self._dropping_level:
            self._dropping_level = None
        if self._dropping_level is None and title.lower() in DROPPED_SECTIONS:
            self._dropping_level = level
        self.sections.append(Section(tuple(t for _, t in self._headings)))

    def _should_skip(self, tag: str, attrs: dict[str, str | None]) -> bool:
        if tag in _SKIP_TAGS:
            return True
        classes = set((attrs.get("class") or "").split())
        if classes & _SKIP_CLASSES:
            return True
        if attrs.get("role") in ("note", "navigation"):
            return True
        style = (attrs.get("style") or "").replace(" ", "").lower()
        return "display:none" in style

    # ---------------------------------------------------------------- parser callbacks
    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        attrs = dict(attrs_list)
        if tag == "img":
            classes = attrs.get("class") or ""
            if "mwe-math-fallback-image" in classes and attrs.get("alt"):
                self._text(_math_text(attrs["alt"] or ""))
            return
        if tag == "br":
            self._text(" ")
            return
        if self._should_skip(tag, attrs):
            if tag not in _VOID:
                self._skip_tag, self._skip_depth = tag, 1
            return
        if tag in _HEADINGS:
            self._flush()
            self._heading, self._heading_level = [], _HEADINGS[tag]
            return
        if tag in _BLOCK_TAGS:
            self._flush()
        if tag == "a" and self._heading is None and self._dropping_level is None:
            title = article_title(attrs.get("href") or "")
            classes = set((attrs.get("class") or "").split())
            if title and "new" not in classes and title not in self._seen_links:
                self._seen_links.add(title)
                self.links.append(title)

    def handle_startendtag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        # <br/>, <img .../>: void either way; never opens a skipped subtree.
        if self._skip_tag is None and tag in ("img", "br"):
            self.handle_starttag(tag, attrs_list)

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag in _HEADINGS and self._heading is not None:
            title = _tidy("".join(self._heading))
            self._heading = None
            if title:
                self._open_section(self._heading_level, title)
            return
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip_tag is None:
            self._text(data)

    def _text(self, text: str) -> None:
        if self._heading is not None:
            self._heading.append(text)
        else:
            self._buffer.append(text)

    def result(self) -> CleanPage:
        self._flush()
        return CleanPage([s for s in self.sections if s.paragraphs], self.links)


def clean_html(html: str) -> CleanPage:
    """Clean text by section, and the linked articles, of one page's parser HTML."""
    cleaner = _Cleaner()
    cleaner.feed(html)
    cleaner.close()
    return cleaner.result()


__all__ = [
    "CLEANER_VERSION",
    "DROPPED_SECTIONS",
    "CleanPage",
    "Section",
    "article_title",
    "clean_html",
    "normalize_title",
]

"""Wikipedia knowledge bases, as the paper built them: central page(s) of a topic plus the pages
they link to, through the MediaWiki API, cleaned into small chunks.

How a page becomes text: ``action=parse`` returns the parser's HTML of the current revision
(``page=``) or of an exact old one (``oldid=``); :mod:`~kfr.builders.wikipedia.cleaner` keeps the
prose by section and drops markup, tables, references, navigation and end matter. (TextExtracts'
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

The modules, in the order a build uses them:

- :mod:`~kfr.builders.wikipedia.mediawiki`: the API client (requests through
  :mod:`kfr.core.http`, replies cached on disk);
- :mod:`~kfr.builders.wikipedia.cleaner`: parser HTML -> sections of plain text and links;
- :mod:`~kfr.builders.wikipedia.chunks`: a cleaned page -> knowledge-base documents;
- :mod:`~kfr.builders.wikipedia.crawl`: which pages (breadth first, or exact revisions);
- :mod:`~kfr.builders.wikipedia.build`: what to build, and the knowledge base and card written.
"""

from kfr.builders.wikipedia.build import (
    PRESETS,
    TOOL,
    WikipediaSpec,
    build_wikipedia_kb,
    rebuild_wikipedia_kb,
)
from kfr.builders.wikipedia.chunks import ChunkSettings
from kfr.builders.wikipedia.crawl import BuildReport, crawl, rebuild_from_revisions
from kfr.builders.wikipedia.mediawiki import (
    DEFAULT_API,
    DEFAULT_RATE,
    MediaWiki,
    PageMissing,
    mediawiki_policy,
)

__all__ = [
    "DEFAULT_API",
    "DEFAULT_RATE",
    "PRESETS",
    "TOOL",
    "BuildReport",
    "ChunkSettings",
    "MediaWiki",
    "PageMissing",
    "WikipediaSpec",
    "build_wikipedia_kb",
    "crawl",
    "mediawiki_policy",
    "rebuild_from_revisions",
    "rebuild_wikipedia_kb",
]

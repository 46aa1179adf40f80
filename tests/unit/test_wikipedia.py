"""Wikipedia knowledge bases against a scripted MediaWiki API on 127.0.0.1.

The server answers ``action=parse`` like MediaWiki does (formatversion=2), including the
failures a long crawl meets: 429 and 500 before success, a missing page, a reply that is not
JSON, a redirect, a disambiguation page.
"""

from __future__ import annotations

import json

import pytest

from kfr.builders.wikipedia.cleaner import article_title, clean_html
from kfr.cli.kb import main
from kfr.core.http import HttpClient, HttpError, HttpPolicy
from kfr.data.cards import read_card
from kfr.data.readers import read_knowledge_base
from tests.unit.fake_server import FakeServer, start

REF = '<sup class="reference"><a href="#c1">[1]</a></sup>'
LONG = "It has several properties that matter for the test and a few more words to be long. "


def _route(request) -> str:
    q = request.query
    return f"oldid:{q['oldid']}" if "oldid" in q else f"page:{q.get('page')}"


def _html(title: str, links: list[str], extra_section: str = "History") -> str:
    anchors = " ".join(f'<a href="/wiki/{t.replace(" ", "_")}" title="{t}">{t}</a>' for t in links)
    return (
        '<div class="mw-content-ltr mw-parser-output" lang="en" dir="ltr">'
        '<div class="shortdescription nomobile" style="display:none">Short</div>'
        '<div role="note" class="hatnote">For other uses, see '
        '<a href="/wiki/Elsewhere">x</a>.</div>'
        '<table class="infobox"><tr><td><a href="/wiki/Infobox_page">infobox</a> 12 kg</td></tr>'
        "</table>"
        f"<p><b>{title}</b> is a subject.{REF} {LONG}See {anchors}.</p>"
        f'<div class="mw-heading mw-heading2"><h2 id="h">{extra_section}</h2></div>'
        f"<p>The {extra_section.lower()} of {title}: {LONG}</p><ul><li>{LONG}</li></ul>"
        '<div class="mw-heading mw-heading2"><h2 id="References">References</h2></div>'
        '<div class="reflist"><ol class="references"><li>A book.</li></ol></div>'
        '<div class="navbox" role="navigation"><a href="/wiki/Navbox_page">nav</a></div>'
        "</div>"
    )


def _parse(title: str, revid: int, html: str, **extra) -> dict:
    return {"parse": {"title": title, "pageid": revid // 10, "revid": revid, "text": html, **extra}}


MISSING = {"error": {"code": "missingtitle", "info": "The page you specified doesn't exist."}}


@pytest.fixture
def wiki():
    httpd, server = start(FakeServer(route=_route))
    links = ["Linked one", "Missing page", "Redirect to one", "Flaky", "Throttled", "Garbled",
             "Disambig", "Linked two"]  # fmt: skip
    central = _html("Central topic", links)
    server.script("page:Central topic", _parse("Central topic", 1000, central))
    server.script("page:Linked one", _parse("Linked one", 1010, _html("Linked one", ["Deeper"])))
    server.script("page:Linked two", _parse("Linked two", 1020, _html("Linked two", [])))
    server.script("page:Missing page", MISSING)
    server.script(
        "page:Redirect to one",
        _parse("Linked one", 1010, _html("Linked one", []), redirects=[{"from": "R", "to": "L"}]),
    )
    server.script(
        "page:Flaky", (500, "<html>Internal error</html>", {}),
        _parse("Flaky", 1030, _html("Flaky", [])),
    )  # fmt: skip
    server.script(
        "page:Throttled", (429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
        _parse("Throttled", 1040, _html("Throttled", [])),
    )  # fmt: skip
    server.script("page:Garbled", (200, '{"parse": {"title": "Garbled", "te', {}))
    server.script(
        "page:Disambig", _parse("Disambig", 1050, "<p>May refer to</p>",
                                properties={"disambiguation": ""}),
    )  # fmt: skip
    for title, revid in (("Central topic", 1000), ("Linked one", 1010), ("Linked two", 1020),
                         ("Flaky", 1030), ("Throttled", 1040)):  # fmt: skip
        html = central if title == "Central topic" else _html(title, [])
        if title == "Linked one":
            html = _html(title, ["Deeper"])
        server.script(f"oldid:{revid}", _parse(title, revid, html))
    yield server
    httpd.shutdown()


def _kb(server, tmp_path, *extra: str) -> int:
    return main(
        [
            "wikipedia", "--topic", "test topic", "--pages", "Central topic", "--depth", "1",
            "--limit", "50", "--out", str(tmp_path / "kb.jsonl"),
            "--api", f"{server.url}/w/api.php",
            "--cache-dir", str(tmp_path / "cache"), "--rate", "1000", "--backoff", "0.01",
            "--retries", "2", "--contact", "tests@example.org", "--quiet", *extra,
        ]
    )  # fmt: skip


def test_builds_a_clean_chunked_knowledge_base_with_revisions_and_a_card(wiki, tmp_path, capsys):
    assert _kb(wiki, tmp_path) == 0
    assert "skipped 1 disambiguation, 1 duplicate, 1 failed, 1 missing" in capsys.readouterr().out
    docs = read_knowledge_base(tmp_path / "kb.jsonl")
    pages = [d.meta["page"] for d in docs]
    # Breadth first, in link order; "Deeper" is two hops away.
    assert list(dict.fromkeys(pages)) == [
        "Central topic", "Linked one", "Flaky", "Throttled", "Linked two",
    ]  # fmt: skip
    first = docs[0]
    assert first.id == "Central topic/0" and first.title == "Central topic"
    assert first.meta["revid"] == 1000 and first.meta["depth"] == 0
    assert first.meta["topic"] == "test topic"
    assert first.meta["url"].endswith("/w/index.php?title=Central_topic&oldid=1000")
    assert first.text.startswith("Central topic is a subject. It has")
    history = [d for d in docs if d.meta["page"] == "Central topic"][1]
    assert history.title == "Central topic — History" and history.meta["section"] == "History"
    for doc in docs:  # no markup, infobox, references, hatnote or navigation
        for junk in ("<", "[1]", "infobox", "12 kg", "A book", "For other uses", "nav", "Short"):
            assert junk not in doc.text, (junk, doc.text)
    card = read_card(tmp_path / "kb.jsonl")
    assert card["kind"] == "knowledge_base"
    assert card["counts"]["pages"] == 5 and card["counts"]["documents"] == len(docs)
    assert card["counts"]["skipped_pages"] == {
        "missing": 1, "duplicate": 1, "failed": 1, "disambiguation": 1,
    }  # fmt: skip
    assert card["settings"]["pages"] == ["Central topic"] and card["settings"]["depth"] == 1
    assert set(card["sha256"]) == {"kb.jsonl"}
    assert card["skipped"]["missing"] == ["Missing page"]
    agents = {r.headers["User-Agent"] for r in wiki.requests}
    assert all(a.startswith("kfr/") and "tests@example.org" in a for a in agents)


def test_a_second_build_is_served_from_the_cache(wiki, tmp_path, capsys):
    assert _kb(wiki, tmp_path) == 0
    first = (tmp_path / "kb.jsonl").read_bytes()
    n = len(wiki.requests)
    assert _kb(wiki, tmp_path) == 0
    # Only the pages that failed (missing, garbled) are asked for again.
    asked = {_route(r) for r in wiki.requests[n:]}
    assert asked == {"page:Missing page", "page:Garbled"}
    assert (tmp_path / "kb.jsonl").read_bytes() == first


def test_rebuild_from_revision_ids_gives_the_same_chunks(wiki, tmp_path, capsys):
    assert _kb(wiki, tmp_path) == 0
    capsys.readouterr()
    code = main(
        [
            "wikipedia", "--revisions", str(tmp_path / "kb.jsonl"), "--out",
            str(tmp_path / "again.jsonl"), "--api", f"{wiki.url}/w/api.php", "--cache-dir",
            str(tmp_path / "cache"), "--rate", "1000", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    assert "0 changed or new" in capsys.readouterr().out
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "kb.jsonl").read_bytes()
    oldids = {r.query["oldid"] for r in wiki.requests if "oldid" in r.query}
    assert oldids == {"1000", "1010", "1020", "1030", "1040"}
    card = read_card(tmp_path / "again.jsonl")
    assert card["comparison"]["identical"] == card["counts"]["documents"]


def test_missing_central_page_is_one_line_and_writes_nothing(wiki, tmp_path, capsys):
    code = main(
        [
            "wikipedia", "--pages", "Missing page", "--out", str(tmp_path / "kb.jsonl"),
            "--api", f"{wiki.url}/w/api.php", "--cache-dir", str(tmp_path / "c"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "central page 'Missing page' does not exist" in err[0]
    assert not (tmp_path / "kb.jsonl").exists() and not (tmp_path / "kb.card.json").exists()


def test_unreachable_api_is_one_line(tmp_path, capsys):
    code = main(
        [
            "wikipedia", "--pages", "Anything", "--out", str(tmp_path / "kb.jsonl"), "--api",
            "http://127.0.0.1:9/w/api.php", "--cache-dir", str(tmp_path / "c"), "--retries", "1",
            "--backoff", "0.01", "--quiet",
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "cannot connect" in err and "gave up after 2 attempts" in err
    assert not (tmp_path / "kb.jsonl").exists()


def test_http_client_retries_then_succeeds_and_does_not_retry_a_404():
    httpd, server = start(FakeServer())
    try:
        server.script("/a", (500, "oops", {}), (200, "not json", {}), {"ok": 1})
        server.script("/b", (404, {"error": {"message": "no such thing"}}, {}))
        waits: list[float] = []
        client = HttpClient(HttpPolicy(retries=3, backoff_s=0.5), sleep=waits.append)
        assert client.request_json(f"{server.url}/a") == {"ok": 1}
        assert waits == [0.5, 1.0]  # exponential backoff
        with pytest.raises(HttpError, match=r"HTTP 404.*no such thing"):
            client.request_json(f"{server.url}/b")
        assert len([r for r in server.requests if r.path == "/b"]) == 1
    finally:
        httpd.shutdown()


def test_cleaner_keeps_prose_and_article_links_only():
    page = clean_html(
        '<p>A <a href="/wiki/Cell_(biology)#Top">cell</a> and <a href="/wiki/File:x.png">img</a>'
        ' and <a href="/w/index.php?title=Red&amp;redlink=1" class="new">red</a>'
        '<sup class="reference">[2]</sup>.</p><h2>See also</h2><p>Ignored <a href="/wiki/B">b'
        "</a></p><h2>Later</h2><p>x &amp; y</p>"
    )
    assert [(s.path, s.paragraphs) for s in page.sections] == [
        ((), ["A cell and img and red."]),
        (("Later",), ["x & y"]),
    ]
    assert page.links == ["Cell (biology)"]
    assert article_title("/wiki/Talk:Foo") is None
    assert article_title("/wiki/Star_Wars:_A_New_Hope") == "Star Wars: A New Hope"


def test_card_command(tmp_path, capsys, wiki):
    assert _kb(wiki, tmp_path) == 0
    capsys.readouterr()
    assert main(["card", str(tmp_path / "kb.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["tool"] == "kfr.builders.wikipedia"
    assert main(["card", str(tmp_path / "nothing.jsonl")]) == 2

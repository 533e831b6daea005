"""actors.feeds against a real HTTP server on 127.0.0.1: the recorded CoinDesk feeds (skipped
when ../shared/data is absent), variants derived from them (malformed, truncated, non-UTF-8,
oversized, gzip bomb), status handling (304, 429/503 Retry-After, 5xx, timeouts, refused
connections, DNS failures) with seeded backoff, HTML/script cleaning, dedup across a restart,
and the SeenStore."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import socket
import threading
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from actors.feeds import (
    DEFAULT_MAX_BYTES,
    USER_AGENT,
    FeedPoller,
    PollResult,
    SeenStore,
    backoff_delay,
    is_bitcoin_related,
    parse_feed,
    parse_retry_after,
    repair_utf8,
)
from cluster.ids import article_id
from cluster.records import clean_text, format_time
from cluster.sources import SourceConfig
from tests.conftest import shared_file

NOW = datetime(2026, 9, 30, 18, 0, tzinfo=UTC)  # just after the 30 Sep capture was built
RSS_DIR = ("feed_and_exchange_fixtures", "rss")
CAPTURE_30 = "coindesk_rss_2026-09-30_quantdashboard.xml"
CAPTURE_25 = "coindesk_rss_2026-09-25_zotochev.xml"


# --- the real captures, read independently of feedparser --------------------------------------


@dataclass(frozen=True)
class Expected:
    title: str
    link: str
    guid: str
    published: datetime
    summary: str

    @property
    def id(self) -> str:
        return article_id(canonical=self.link)


def _capture(name: str) -> bytes:
    return shared_file(*RSS_DIR, name).read_bytes()


def _expected(body: bytes) -> list[Expected]:
    """The items of a capture, read with ElementTree (an oracle that is not feedparser)."""
    out = []
    for item in ET.fromstring(body).iter("item"):
        out.append(
            Expected(
                title=" ".join((item.findtext("title") or "").split()),
                link=item.findtext("link") or "",
                guid=item.findtext("guid") or "",
                published=parsedate_to_datetime(item.findtext("pubDate") or "").astimezone(UTC),
                summary=clean_text(item.findtext("description"), 2000),
            )
        )
    return out


@pytest.fixture(scope="module")
def cap30() -> bytes:
    return _capture(CAPTURE_30)


@pytest.fixture(scope="module")
def cap25() -> bytes:
    return _capture(CAPTURE_25)


def _rss(items: str, channel: str = "Test feed") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>{channel}</title><link>https://news.example.com/</link>{items}</channel></rss>\n"
    ).encode()


def _subset(capture: bytes, first: int, extra: bytes = b"") -> bytes:
    """The capture's channel header, its first ``first`` items and the items of ``extra``."""
    head, _, rest = capture.partition(b"<item>")
    items = [b"<item>" + part for part in rest.split(b"<item>")]
    items[-1] = items[-1].split(b"</channel>")[0]
    extra_items = []
    if extra:
        _, _, erest = extra.partition(b"<item>")
        extra_items = [b"<item>" + part for part in erest.split(b"<item>")]
        extra_items[-1] = extra_items[-1].split(b"</channel>")[0]
    return head + b"".join(items[:first] + extra_items) + b"</channel>\n</rss>\n"


# --- a real HTTP server ----------------------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class FeedServer:
    httpd: ThreadingHTTPServer
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]

    def static(
        self,
        path: str,
        body: bytes,
        *,
        status: int = 200,
        etag: str | None = None,
        last_modified: str | None = None,
        content_type: str = "application/rss+xml; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``body``; answer 304 when If-None-Match carries ``etag``."""

        def route(h: BaseHTTPRequestHandler) -> None:
            if etag is not None and h.headers.get("If-None-Match") == etag:
                h.send_response(304)
                h.send_header("ETag", etag)
                h.end_headers()
                return
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            if etag is not None:
                h.send_header("ETag", etag)
            if last_modified is not None:
                h.send_header("Last-Modified", last_modified)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = route


def _handler(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            # The poller may hang up on purpose (too large, timeout).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[FeedServer]:
    srv = FeedServer(httpd=None)  # type: ignore[arg-type]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    httpd.block_on_close = False
    srv.httpd = httpd
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy set in the environment must not intercept 127.0.0.1.
    with httpx.Client(trust_env=False) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SeenStore]:
    with SeenStore(tmp_path / "seen.sqlite") as s:
        yield s


def _counts(r: PollResult) -> tuple[int, int, int, int, int]:
    return (r.fetched, r.new, r.duplicates, r.rejected, r.filtered)


def _poller(
    server: FeedServer,
    path: str,
    client: httpx.Client,
    store: SeenStore,
    *,
    name: str = "CoinDesk",
    interval_s: int = 300,
    bitcoin_only: bool = False,
    seed: int = 7,
    **kwargs: object,
) -> FeedPoller:
    config = SourceConfig(
        name, server.url(path), interval_s=interval_s, bitcoin_only=bitcoin_only, allow_private=True
    )
    return FeedPoller(config, client, store, rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]


# --- the real capture: exact items, conditional GET, commit ------------------------------------------


def test_capture_gives_exactly_its_items_then_304_after_commit(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap30: bytes
) -> None:
    lm = "Wed, 30 Sep 2026 17:27:11 GMT"
    server.static("/coindesk.xml", cap30, etag='"v1"', last_modified=lm)
    poller = _poller(server, "/coindesk.xml", client, store)
    assert poller.due(NOW) and poller.next_poll_at is None

    result = poller.poll(NOW)
    expected = _expected(cap30)
    assert len(expected) == 25
    assert result.status == "ok" and result.http_status == 200 and result.error is None
    assert [i.title for i in result.items] == [e.title for e in expected]
    assert [i.id for i in result.items] == [e.id for e in expected]
    assert [i.url for i in result.items] == [e.link for e in expected]
    assert [i.published_at for i in result.items] == [format_time(e.published) for e in expected]
    assert [i.summary for i in result.items] == [e.summary for e in expected]
    assert all(i.source == "CoinDesk" and i.fetched_at == "2026-09-30T18:00:00Z" for i in result.items)
    assert not any(i.time_estimated for i in result.items)
    # Real-feed details: the double space folded, the trailing space gone, curly quotes kept.
    assert "U.S. CFTC seeks event contract definitions that may defy states' gambling claims" in [
        i.title for i in result.items
    ]
    assert "Crypto Long & Short: What will the AI agents run on?" in [i.title for i in result.items]
    assert any("Brazil’s" in i.title for i in result.items)
    assert _counts(result) == (25, 25, 0, 0, 0)
    assert result.next_poll_at == NOW + timedelta(seconds=300)

    first = server.headers_of("/coindesk.xml")[0]
    assert first["user-agent"] == USER_AGENT
    assert first["accept-encoding"] == "gzip"
    assert "if-none-match" not in first and "if-modified-since" not in first

    # Not committed (the broker did not confirm): the next poll is unconditional and the
    # same 25 items come again. Nothing is lost.
    again = poller.poll(NOW + timedelta(seconds=300))
    assert "if-none-match" not in server.headers_of("/coindesk.xml")[1]
    assert [i.id for i in again.items] == [e.id for e in expected]

    assert poller.commit(again.items) == 25
    h = poller.health
    assert (h.fetched, h.new, h.duplicates, h.rejected, h.filtered, h.errors) == (50, 25, 0, 0, 0, 0)

    # Committed: now the poll is conditional and the server answers 304.
    later = NOW + timedelta(seconds=600)
    third = poller.poll(later)
    sent = server.headers_of("/coindesk.xml")[2]
    assert sent["if-none-match"] == '"v1"' and sent["if-modified-since"] == lm
    assert third.status == "not_modified" and third.http_status == 304 and third.items == []
    assert third.next_poll_at == later + timedelta(seconds=300)
    assert poller.health.last_status == 304
    assert poller.health.last_success_at == format_time(later)
    assert poller.health.next_poll_at == "2026-09-30T18:15:00Z"
    assert not poller.due(later + timedelta(seconds=299)) and poller.due(later + timedelta(seconds=300))

    # The server loses its ETag support: a full 200 of the same feed gives nothing new.
    server.static("/coindesk.xml", cap30)
    fourth = poller.poll(later + timedelta(seconds=300))
    assert fourth.status == "ok" and fourth.items == [] and fourth.duplicates == 25
    assert json.loads(json.dumps(poller.health.to_dict()))["duplicates"] == 25


def test_restart_publishes_uncommitted_items_and_never_committed_ones(
    tmp_path: Path, server: FeedServer, client: httpx.Client, cap30: bytes, cap25: bytes
) -> None:
    db = tmp_path / "state" / "seen.sqlite"
    server.static("/feed", cap30, etag='"a"')
    with SeenStore(db) as store:
        poller = _poller(server, "/feed", client, store)
        poller.commit(poller.poll(NOW).items)  # all 25 published and confirmed
        # The feed moves on: 10 of the old items and the 3 of 25 Sep (new to us).
        server.static("/feed", _subset(cap30, 10, extra=cap25), etag='"b"')
        pending = poller.poll(NOW + timedelta(minutes=5))
        new_titles = [e.title for e in _expected(cap25)]
        assert [i.title for i in pending.items] == new_titles
        assert pending.duplicates == 10
        # ... and the process dies before the broker confirmed them: no commit.

    with SeenStore(db) as store:  # the restarted actor
        poller = _poller(server, "/feed", client, store)
        result = poller.poll(NOW + timedelta(minutes=10))
        assert [i.title for i in result.items] == new_titles  # nothing lost
        assert (result.fetched, result.duplicates) == (13, 10)  # nothing published twice
        assert poller.commit(result.items) == 3
        assert len(store) == 28 + 28  # each id and each GUID key

    with SeenStore(db) as store:  # and once more: everything is committed
        poller = _poller(server, "/feed", client, store)
        result = poller.poll(NOW + timedelta(minutes=15))
        assert result.items == [] and result.duplicates == 13


def test_guid_only_items_share_their_id_across_sources(
    server: FeedServer, client: httpx.Client, store: SeenStore
) -> None:
    """cluster.ids derives a link-less item's id from its GUID alone, so two feeds that use the
    same GUID text are one article: the second is a duplicate (documents today's contract)."""
    server.static("/a", _rss("<item><title>A one</title><guid>post-1</guid></item>"))
    server.static("/b", _rss("<item><title>B one</title><guid>post-1</guid></item>"))
    a = _poller(server, "/a", client, store, name="A")
    b = _poller(server, "/b", client, store, name="B")
    ra = a.poll(NOW)
    a.commit(ra.items)
    rb = b.poll(NOW)
    assert [i.title for i in ra.items] == ["A one"]
    assert rb.items == [] and rb.duplicates == 1


# --- untrusted content -----------------------------------------------------------------------------

SYNTHETIC = _rss(
    # 1: script in the title (escaped) and in the description (CDATA), tracking query in the link
    "<item><title>Bitcoin &lt;script&gt;alert(1)&lt;/script&gt; tops $100k</title>"
    "<link>https://news.example.com/a?utm_source=rss&amp;id=7</link><guid isPermaLink='false'>g-a</guid>"
    "<pubDate>Wed, 30 Sep 2026 12:00:00 +0000</pubDate>"
    "<description><![CDATA[<p>BTC <b>rallies</b></p><script>steal()</script>"
    "<img src=x onerror=alert(1)> &amp; more]]></description></item>"
    # 2: no date at all
    "<item><title>No date here</title><link>https://news.example.com/b</link><guid>g-b</guid></item>"
    # 3: dated a quarter in the future
    "<item><title>From the future</title><link>https://news.example.com/c</link><guid>g-c</guid>"
    "<pubDate>Fri, 01 Jan 2027 00:00:00 +0000</pubDate></item>"
    # 4: an empty title after cleaning
    "<item><title><![CDATA[<script>only()</script>]]></title><link>https://news.example.com/d</link></item>"
    # 5: neither link nor GUID; 6: a javascript: link and no GUID
    "<item><title>Nowhere to link</title></item>"
    "<item><title>Evil link</title><link>javascript:alert(1)</link></item>"
    # 7: the same GUID as 1 again in the same document, different text
    "<item><title>Bitcoin tops $100k (updated)</title><link>https://news.example.com/a</link>"
    "<guid isPermaLink='false'>g-a</guid></item>"
    # 8: GUID only (no link), in an <![CDATA[]]> title with markup
    "<item><title><![CDATA[<b>Sats</b> &amp; stacking]]></title><guid isPermaLink='false'>g-h</guid></item>"
)


def test_script_html_dates_and_rejections(server: FeedServer, client: httpx.Client, store: SeenStore) -> None:
    server.static("/synthetic", SYNTHETIC)
    result = _poller(server, "/synthetic", client, store).poll(NOW)
    assert result.status == "ok"
    by_title = {i.title: i for i in result.items}
    assert list(by_title) == ["Bitcoin tops $100k", "No date here", "From the future", "Sats & stacking"]

    first = by_title["Bitcoin tops $100k"]
    assert first.summary == "BTC rallies & more"
    assert "<" not in first.title + first.summary and "alert" not in first.title + first.summary
    assert first.url == "https://news.example.com/a?id=7"  # utm_* dropped
    assert first.published_at == "2026-09-30T12:00:00Z" and not first.time_estimated

    for title in ("No date here", "From the future"):
        assert by_title[title].time_estimated
        assert by_title[title].published_at == "2026-09-30T18:00:00Z"  # the fetch time

    guid_only = by_title["Sats & stacking"]
    assert guid_only.url == "" and guid_only.id == article_id(guid="g-h")

    assert (result.fetched, result.rejected, result.duplicates) == (8, 3, 1)
    assert result.rejected_reasons == {"empty title": 1, "no usable link or guid": 2}
    assert _counts(result) == (8, 4, 1, 3, 0)


def test_duplicate_guid_with_changed_content_is_not_republished(
    server: FeedServer, client: httpx.Client, store: SeenStore
) -> None:
    v1 = "<item><title>Bitcoin at $90k</title><link>https://news.example.com/p/1</link><guid>guid-1</guid></item>"
    server.static("/f", _rss(v1))
    poller = _poller(server, "/f", client, store)
    poller.commit(poller.poll(NOW).items)
    # The publisher edits the article: new title and text, same GUID; once with the same link,
    # once with a changed slug (a new canonical URL, so a new article id; the GUID still matches).
    v2 = (
        "<item><title>Bitcoin at $91k (corrected)</title><description>New text</description>"
        "<link>https://news.example.com/p/1</link><guid>guid-1</guid></item>"
        "<item><title>Bitcoin at $91k, slug changed</title>"
        "<link>https://news.example.com/p/1-bitcoin-91k</link><guid>guid-1</guid></item>"
        "<item><title>Fresh story</title><link>https://news.example.com/p/2</link><guid>guid-2</guid></item>"
    )
    server.static("/f", _rss(v2))
    result = poller.poll(NOW + timedelta(minutes=5))
    assert [i.title for i in result.items] == ["Fresh story"]
    assert result.duplicates == 2
    assert poller.health.duplicates == 2 and poller.health.new == 1


def test_bitcoin_only_filter_on_the_real_capture(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap30: bytes
) -> None:
    server.static("/coindesk.xml", cap30)
    result = _poller(server, "/coindesk.xml", client, store, bitcoin_only=True).poll(NOW)
    # Read by hand: the titles or summaries of these items name bitcoin/BTC.
    assert [i.title for i in result.items] == [
        "A stronger dollar is a weaker threat to bitcoin than traders think",
        "Live updates: Bitcoin returns to $84,000, giving up early gains",
        "Bitcoin stalls near $83,000 while lighter drops 17% on Robinhood perps plan",
        "How European investors can now buy bitcoin without taking on U.S. dollar risk",
        "Bitcoin bulls have one price level to defend",
        "Bitcoin rally shows signs of cooling even as a 'bull score' gauge nears its perfect score",
        "Bitcoin surging to $100,000 may be in play, after outperforming gold",
    ]
    assert (result.fetched, result.filtered, result.new) == (25, 18, 7)


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Bitcoin ETF inflows", True),
        ("BTC/USD slips", True),
        ("BTCUSD at 84k", True),
        ("Satoshi's coins move", True),
        ("stacking sats", True),
        ("Lightning Network capacity", True),
        ("price in ₿", True),
        ("WBTC bridge paused", False),
        ("btcturk hacked", False),
        ("Ether gas fees", False),
        ("lightning strikes", False),
    ],
)
def test_bitcoin_pattern(text: str, hit: bool) -> None:
    assert is_bitcoin_related(text) is hit


def test_atom_feed_with_relative_links(server: FeedServer, client: httpx.Client, store: SeenStore) -> None:
    atom = (
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        b'<entry><title type="html">&lt;b&gt;Bitcoin&lt;/b&gt; hashrate record</title>'
        b'<link href="/news/1?utm_medium=feed"/><id>tag:example.com,2026:1</id>'
        b"<updated>2026-09-30T10:00:00+02:00</updated><summary>Miners</summary></entry></feed>"
    )
    server.static("/atom", atom, content_type="application/atom+xml")
    result = _poller(server, "/atom", client, store).poll(NOW)
    (item,) = result.items
    assert item.title == "Bitcoin hashrate record"
    assert item.url == server.url("/news/1")  # resolved against the feed URL, utm_ dropped
    assert item.published_at == "2026-09-30T08:00:00Z"  # converted to UTC


# --- broken bodies -----------------------------------------------------------------------------------


def test_malformed_xml_keeps_recovered_items(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap30: bytes
) -> None:
    broken = cap30.replace(b"</item>", b"", 3)  # three items lose their closing tag
    server.static("/broken", broken, etag='"x"')
    poller = _poller(server, "/broken", client, store)
    result = poller.poll(NOW)
    assert result.status == "partial"
    assert result.error is not None and "not well-formed" in result.error
    assert "mismatched tag" in result.error  # feedparser's bozo_exception text
    assert [i.title for i in result.items] == [e.title for e in _expected(cap30)]
    # A broken response's ETag is never used: the next poll fetches the whole feed again.
    poller.commit(result.items)
    poller.poll(NOW + timedelta(minutes=5))
    assert "if-none-match" not in server.headers_of("/broken")[1]
    assert poller.health.consecutive_failures == 0 and poller.health.last_error == result.error


def test_truncated_body_drops_the_possibly_cut_last_item(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap30: bytes
) -> None:
    server.static("/half", cap30[: len(cap30) // 2])  # Content-Length matches: a cut document
    result = _poller(server, "/half", client, store).poll(NOW)
    assert result.status == "partial"
    assert result.error is not None and "truncated" in result.error and "SAXParseException" in result.error
    # feedparser recovered 12 entries; the 12th might have been cut and is left for next time.
    assert [i.title for i in result.items] == [e.title for e in _expected(cap30)[:11]]


def test_truncated_before_any_item_is_not_a_feed(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap30: bytes
) -> None:
    server.static("/stub", cap30[:500])
    result = _poller(server, "/stub", client, store).poll(NOW)
    assert result.status == "error" and result.items == []
    assert result.error is not None and result.error.startswith("not a feed: truncated document")
    assert "no element found" in result.error


def test_body_shorter_than_content_length_is_an_error(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap30: bytes
) -> None:
    def short(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", str(len(cap30)))
        h.end_headers()
        h.wfile.write(cap30[:5000])
        h.wfile.flush()
        h.close_connection = True

    server.routes["/short"] = short
    poller = _poller(server, "/short", client, store)
    result = poller.poll(NOW)
    assert result.status == "error" and result.items == []
    assert result.error is not None and result.error.startswith("RemoteProtocolError")
    assert poller.health.errors == 1 and poller.health.consecutive_failures == 1


def test_non_utf8_bytes_are_replaced_not_fatal(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap30: bytes
) -> None:
    bad = cap30.replace(b"Cardano tapped", b"Card\xff\xfeano tapped")
    bad = bad.replace(b"Metaplanet", b"Meta\xe9planet")
    server.static("/bad-utf8", bad)
    result = _poller(server, "/bad-utf8", client, store).poll(NOW)
    assert result.status == "ok" and len(result.items) == 25
    titles = [i.title for i in result.items]
    # Only the bad bytes are replaced; the rest of the feed is not re-read as another charset.
    cardano = "Card\ufffd\ufffdano tapped by Brazil’s state oil giant to track cleaner jet fuel and diesel"
    assert cardano in titles
    assert any(t.startswith("Meta\ufffdplanet directors") for t in titles)
    assert sum("’" in t for t in titles) == sum("’" in e.title for e in _expected(cap30))


def test_repair_utf8_leaves_other_charsets_alone() -> None:
    latin = b'<?xml version="1.0" encoding="windows-1252"?><rss/>\xe9'
    assert repair_utf8(latin, None) == (latin, False)
    assert repair_utf8(b"<rss>\xff</rss>", "text/xml; charset=utf-8") == ("<rss>\ufffd</rss>".encode(), True)
    assert repair_utf8(b"<rss>\xff</rss>", "text/xml; charset=iso-8859-1") == (b"<rss>\xff</rss>", False)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (
            b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>Hi</body></html>",
            "text/html; charset=utf-8",
            "not a feed: an HTML page (NonXMLContentType: text/html; charset=utf-8 is not an XML media type)",
        ),
        (b"<<<>>> &&& ]]>", "application/xml", "not a feed: truncated document (SAXParseException: "),
        (
            b'<?xml version="1.0"?><catalog><book/></catalog>',
            "application/xml",
            "not a feed: no RSS/Atom root",
        ),
        (b'{"items": []}', "application/json", "not a feed: "),
        (b"   \n", "application/rss+xml", "not a feed: empty body"),
    ],
)
def test_not_a_feed(
    server: FeedServer,
    client: httpx.Client,
    store: SeenStore,
    body: bytes,
    content_type: str,
    reason: str,
) -> None:
    server.static("/page", body, content_type=content_type)
    poller = _poller(server, "/page", client, store)
    result = poller.poll(NOW)
    assert result.status == "error" and result.items == [] and result.http_status == 200
    assert result.error is not None and result.error.startswith(reason)
    assert poller.health.last_status == result.error and poller.health.errors == 1


def test_a_body_naming_a_local_file_is_not_read(
    tmp_path: Path, server: FeedServer, client: httpx.Client, store: SeenStore, cap25: bytes
) -> None:
    """feedparser.parse(bytes) opens bytes that name a file; the poller must never do that."""
    local = tmp_path / "secret-feed.xml"
    local.write_bytes(cap25)
    server.static("/path", str(local).encode())
    result = _poller(server, "/path", client, store).poll(NOW)
    assert result.status == "error" and result.items == []
    assert parse_feed(str(local).encode()).entries == []


def test_empty_valid_feed_is_ok(server: FeedServer, client: httpx.Client, store: SeenStore) -> None:
    server.static("/empty", _rss(""))
    result = _poller(server, "/empty", client, store).poll(NOW)
    assert result.status == "ok" and result.items == [] and result.fetched == 0


# --- size limits -------------------------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024
_PAD = b"<!-- " + b"x" * (64 * 1024 - 9) + b" -->"


def _stream_forever(h: BaseHTTPRequestHandler, declare_length: bool) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/rss+xml")
    if declare_length:
        h.send_header("Content-Length", str(TEN_MB))
    h.end_headers()
    h.wfile.write(b'<?xml version="1.0"?><rss version="2.0"><channel>')
    for _ in range(TEN_MB // len(_PAD) + 1):
        h.wfile.write(_PAD)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip.compress(b'<?xml version="1.0"?><rss version="2.0"><channel>' + b" " * (64 * 1024 * 1024))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/declared", f"response too large: Content-Length {TEN_MB} > {DEFAULT_MAX_BYTES} bytes"),
        ("/undeclared", f"response too large: more than {DEFAULT_MAX_BYTES} bytes"),
        ("/gzip-bomb", f"response too large: more than {DEFAULT_MAX_BYTES} bytes"),
    ],
)
def test_oversized_bodies_are_refused_without_holding_them(
    server: FeedServer, client: httpx.Client, store: SeenStore, bomb: bytes, path: str, message: str
) -> None:

    def gzip_bomb(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(bomb)))  # ~64 KB on the wire, 64 MB inflated
        h.end_headers()
        h.wfile.write(bomb)

    server.routes["/declared"] = lambda h: _stream_forever(h, True)
    server.routes["/undeclared"] = lambda h: _stream_forever(h, False)
    server.routes["/gzip-bomb"] = gzip_bomb
    poller = _poller(server, path, client, store)
    tracemalloc.start()
    try:
        result = poller.poll(NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "error" and result.error == message
    assert peak < 7 * 1024 * 1024, f"peak {peak} bytes: the body was held in memory"


def test_gzip_body_within_limit_is_decoded(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap25: bytes
) -> None:
    server.static("/gz", gzip.compress(cap25), headers={"Content-Encoding": "gzip"})
    result = _poller(server, "/gz", client, store).poll(NOW)
    assert [i.title for i in result.items] == [e.title for e in _expected(cap25)]


# --- status handling, timeouts, backoff --------------------------------------------------------------


def _jitter(seed: int, ceilings: list[float]) -> list[float]:
    rng = random.Random(seed)
    return [max(30.0, rng.uniform(0.0, c)) for c in ceilings]


def test_server_errors_back_off_exponentially_with_full_jitter(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap25: bytes
) -> None:
    server.static("/flaky", b"oops", status=500, content_type="text/plain")
    poller = _poller(server, "/flaky", client, store, interval_s=300, seed=42)
    now = NOW
    ceilings = [300.0, 600.0, 1200.0, 2400.0, 3600.0, 3600.0, 3600.0]
    delays = []
    for n in range(1, len(ceilings) + 1):
        result = poller.poll(now)
        assert result.status == "error" and result.error == "HTTP 500" and result.http_status == 500
        assert poller.health.consecutive_failures == n and poller.health.last_status == 500
        assert result.next_poll_at is not None
        delays.append((result.next_poll_at - now).total_seconds())
        now = result.next_poll_at
    assert delays == pytest.approx(_jitter(42, ceilings))
    assert all(30.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert poller.health.errors == 7 and poller.health.next_poll_at == format_time(now)

    server.static("/flaky", cap25)  # recovered: the schedule returns to the interval
    ok = poller.poll(now)
    assert ok.status == "ok" and ok.next_poll_at == now + timedelta(seconds=300)
    assert poller.health.consecutive_failures == 0 and poller.health.last_status == 200
    assert poller.health.last_error == "HTTP 500"  # kept for the operator


def test_backoff_floor_and_cap() -> None:
    class Max(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    class Min(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    assert backoff_delay(1, 300, 3600, Min()) == 30.0
    assert backoff_delay(40, 300, 3600, Max()) == 3600.0
    assert backoff_delay(3, 7200, 3600, Max()) == 7200.0  # never a cap below the interval


@pytest.mark.parametrize(
    ("status", "retry_after", "interval", "expected_s"),
    [
        (429, "120", 30, 120.0),  # honoured when longer than the interval
        (429, "10", 300, 300.0),  # never sooner than the normal interval
        (503, "HTTP-DATE+600", 30, 600.0),
        (429, "999999", 30, 6 * 3600.0),  # bounded
    ],
)
def test_retry_after(
    server: FeedServer,
    client: httpx.Client,
    store: SeenStore,
    status: int,
    retry_after: str,
    interval: int,
    expected_s: float,
) -> None:
    value = retry_after
    if value.startswith("HTTP-DATE+"):
        value = format_datetime(NOW + timedelta(seconds=int(value.split("+")[1])), usegmt=True)
    server.static("/busy", b"slow down", status=status, headers={"Retry-After": value})
    poller = _poller(server, "/busy", client, store, interval_s=interval)
    result = poller.poll(NOW)
    assert result.status == "error" and result.error == f"HTTP {status}"
    assert result.next_poll_at == NOW + timedelta(seconds=expected_s)
    assert poller.health.last_status == status and poller.health.consecutive_failures == 1


def test_429_without_retry_after_backs_off(
    server: FeedServer, client: httpx.Client, store: SeenStore
) -> None:
    server.static("/busy", b"", status=429)
    result = _poller(server, "/busy", client, store, interval_s=300, seed=3).poll(NOW)
    assert result.next_poll_at == NOW + timedelta(seconds=_jitter(3, [300.0])[0])


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after("Wed, 30 Sep 2026 18:10:00 GMT", NOW) == 600.0
    assert parse_retry_after("Wed, 30 Sep 2026 17:00:00 GMT", NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_slow_server_times_out(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap25: bytes
) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(1.0)
        h.send_response(200)
        h.end_headers()
        h.wfile.write(cap25)

    server.routes["/slow"] = slow
    poller = _poller(server, "/slow", client, store, seed=5, timeout=httpx.Timeout(0.3))
    started = time.monotonic()
    result = poller.poll(NOW)
    assert time.monotonic() - started < 0.9
    assert result.status == "error" and result.error == "timeout: ReadTimeout"
    assert result.next_poll_at == NOW + timedelta(seconds=_jitter(5, [300.0])[0])


def test_dripping_server_hits_the_total_deadline(
    server: FeedServer, client: httpx.Client, store: SeenStore
) -> None:
    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b" " * 70_000)  # more than one read chunk each time
            h.wfile.flush()
            time.sleep(0.05)

    server.routes["/drip"] = drip
    poller = _poller(server, "/drip", client, store, timeout=httpx.Timeout(1.0), total_timeout_s=0.3)
    result = poller.poll(NOW)
    assert result.error == "timeout: body not received within the total deadline"


def test_refused_connection_backs_off(client: httpx.Client, store: SeenStore) -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = SourceConfig("Down", f"http://127.0.0.1:{port}/feed", allow_private=True)
    poller = FeedPoller(config, client, store, rng=random.Random(9))
    result = poller.poll(NOW)
    assert result.status == "error" and result.error is not None and result.error.startswith("ConnectError")
    assert result.next_poll_at == NOW + timedelta(seconds=_jitter(9, [300.0])[0])


def test_dns_failure_and_private_resolution(client: httpx.Client, store: SeenStore) -> None:
    def no_dns(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def private(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    config = SourceConfig("Named", "https://feeds.example.com/rss")
    result = FeedPoller(config, client, store, rng=random.Random(1), resolver=no_dns).poll(NOW)
    assert result.error == "DNS failure: [Errno -2] Name or service not known"
    assert result.next_poll_at == NOW + timedelta(seconds=_jitter(1, [300.0])[0])

    poller = FeedPoller(config, client, store, rng=random.Random(1), resolver=private)
    result = poller.poll(NOW)  # refused before any connection is attempted
    assert result.error == "refused: host 'feeds.example.com' resolves to non-public address 10.1.2.3"
    assert poller.health.last_status == result.error


def test_redirects_are_followed_and_bounded(
    server: FeedServer, client: httpx.Client, store: SeenStore, cap25: bytes
) -> None:
    server.static("/feed", cap25)
    server.static("/moved", b"", status=301, headers={"Location": "/feed"})
    server.static("/loop", b"", status=302, headers={"Location": "/loop"})
    result = _poller(server, "/moved", client, store).poll(NOW)
    assert result.status == "ok" and len(result.items) == 3
    assert server.headers_of("/feed")[0]["user-agent"] == USER_AGENT
    loop = _poller(server, "/loop", client, store).poll(NOW)
    assert loop.error == "more than 5 redirects" and len(server.headers_of("/loop")) == 6


def test_other_client_errors_back_off(server: FeedServer, client: httpx.Client, store: SeenStore) -> None:
    result = _poller(server, "/missing", client, store).poll(NOW)  # the server's 404
    assert result.status == "error" and result.error == "HTTP 404" and result.http_status == 404


def test_disabled_source_and_every_kind_has_a_poller(client: httpx.Client, store: SeenStore) -> None:
    off = SourceConfig("Off", "https://example.com/feed", enabled=False)
    poller = FeedPoller(off, client, store)
    assert not poller.due(NOW)
    result = poller.poll(NOW)
    assert result.status == "disabled" and result.next_poll_at is None
    assert poller.health.to_dict()["enabled"] is False
    # Every kind has a collector now: building one for Reddit's feed raises nothing.
    assert FeedPoller(
        SourceConfig("R", "https://www.reddit.com/r/Bitcoin/.rss", kind="reddit"), client, store
    )


def test_health_dict_shape(server: FeedServer, client: httpx.Client, store: SeenStore, cap25: bytes) -> None:
    server.static("/f", cap25)
    poller = _poller(server, "/f", client, store)
    poller.commit(poller.poll(NOW).items)
    d = poller.health.to_dict()
    assert d == {
        "name": "CoinDesk",
        "kind": "rss",
        "enabled": True,
        "fetched": 3,
        "new": 3,
        "duplicates": 0,
        "rejected": 0,
        "filtered": 0,
        "errors": 0,
        "last_status": 200,
        "last_poll_at": "2026-09-30T18:00:00Z",
        "last_success_at": "2026-09-30T18:00:00Z",
        "last_error": None,
        "next_poll_at": "2026-09-30T18:05:00Z",
        "consecutive_failures": 0,
        "rejected_reasons": {},
    }


# --- SeenStore ---------------------------------------------------------------------------------------


def test_seen_store_add_contains_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "seen.sqlite"
    with SeenStore(path) as s:
        assert s.add_new(["a", "b", "a"], now=1000.0) == {"a", "b"}
        assert s.add_new(["b", "c"], now=1001.0) == {"c"}
        assert s.contains(["a", "c", "z"]) == {"a", "c"}
    with SeenStore(path) as s:
        assert len(s) == 3 and s.contains(["a", "b", "c"]) == {"a", "b", "c"}
        big = [f"k{i}" for i in range(1200)]  # more than one chunk of bound variables
        s.add_new(big, now=1002.0)
        assert s.contains([*big, "nope"]) == set(big)


def test_seen_store_retention_and_row_bound(tmp_path: Path) -> None:
    with SeenStore(tmp_path / "s.sqlite", retention_s=100.0, max_rows=3) as s:
        s.add_new(["old"], now=0.0)
        s.add_new(["k1", "k2"], now=50.0)
        s.add_new(["k3"], now=150.0)  # "old" is past retention now
        assert s.contains(["old", "k1", "k2", "k3"]) == {"k1", "k2", "k3"}
        s.add_new(["k4", "k5"], now=151.0)  # beyond 3 rows: the oldest go first
        assert s.contains(["k1", "k2", "k3", "k4", "k5"]) == {"k3", "k4", "k5"}

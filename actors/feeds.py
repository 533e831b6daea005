"""The source poller: one source, one conditional GET at a time. No Ray, no Pulsar.

A source actor drives one :class:`FeedPoller` per source and owns the publishing; everything
that touches the network or the source's bytes is here. Every kind shares the HTTP machinery
(target check, conditional GET, limits, backoff, dedup, health, the poll/commit contract); only
the request details and the *parse* step (stage 5) differ by ``kind``:

============  ==================================================================================
kind          request / parse
============  ==================================================================================
rss           feed ``Accept`` header; ``feedparser`` (:func:`parse_feed`)
reddit        User-Agent :data:`REDDIT_USER_AGENT` (Reddit throttles generic ones); the listing
              JSON (``/r/<sub>/new.json``): one item per ``t3`` child, url ``https://www.reddit.com``
              + ``permalink``, GUID ``name`` (``t3_<id>``), summary ``selftext``, time
              ``created_utc``. A URL whose path ends with ``.rss`` is parsed as RSS/Atom instead.
cryptopanic   ``auth_token=<token>`` added to the query at request time; ``results``: url
              ``original_url`` else ``url``, GUID ``id``, summary ``description``, time
              ``published_at`` else ``created_at``
gdelt         GDELT DOC 2.0 ``mode=artlist&format=json``: ``articles`` (``{}`` when nothing
              matched): url, title, time ``seendate`` (``20260101T120000Z``, UTC)
x             ``Authorization: Bearer <token>``; ``data``: title = ``text`` (bounded), url
              ``https://x.com/i/web/status/<id>``, GUID ``id``, time ``created_at``
============  ==================================================================================

Credentials (``cryptopanic``, ``x``) come from the environment variable the source names
(``SourceConfig.token_env``), read when the poller is built. Without it the source is
*disabled*: health ``enabled=False``, ``last_error="disabled: set CRYPTOPANIC_TOKEN"``,
:meth:`FeedPoller.due` is false and :meth:`FeedPoller.poll` returns status ``disabled`` without
any request. A token never reaches a result, the health output, ``repr`` or a log line: error
texts are redacted (``***``), the ``httpx``/``httpcore`` loggers get a redacting filter (httpx
logs each request URL, which carries CryptoPanic's token), and the ``Authorization`` header is
dropped on a redirect to another origin.

Stages of one :meth:`FeedPoller.poll`
-------------------------------------
1. **Target check**: the URL's host is resolved and refused when any address is private,
   loopback or link-local (unless the source sets ``allow_private``); so is every redirect.
2. **Conditional GET**: ``If-None-Match`` / ``If-Modified-Since`` from the last response whose
   items were all committed (see *Delivery*), a per-request timeout (connect 5 s, read 15 s) and
   a total deadline, redirects followed by hand (at most 5, each target checked).
3. **Status**: 200 is parsed; 304 means nothing new; 429/503 honour ``Retry-After`` (seconds or
   an HTTP date), else the rate-limit reset headers (X's ``x-rate-limit-reset``, an epoch time;
   Reddit's ``x-ratelimit-reset``, seconds); any other status, a timeout, a connection or DNS
   error backs off exponentially with full jitter (base: the source's interval; cap: one hour).
4. **Bounded read**: the body is streamed and decompressed by hand (``Accept-Encoding: gzip``),
   and reading stops at ``max_bytes`` of *decoded* bytes ("response too large"), so neither a
   huge body nor a gzip bomb is ever held in memory.
5. **Parse**: JSON kinds with ``json`` (:func:`parse_json_document`; a body that is not JSON,
   or JSON of another shape, is status ``error`` with the reason and the start of the body; an
   element that is not an object is a rejected entry). RSS with ``feedparser``
   (:func:`parse_feed`). The body goes in as a stream, never as ``bytes``: feedparser treats a
   byte string that names a file as a path to read. Invalid UTF-8 in a document that is (or
   defaults to) UTF-8 is replaced by U+FFFD first, so one bad byte neither crashes the parse
   nor makes feedparser re-read the whole feed as Latin-2. Empty ``<description/>``-like
   elements are removed first: feedparser maps ``description``, ``dc:description`` and
   ``summary`` onto one field, and CoinDesk's real feed follows every ``<description>`` with an
   empty ``<dc:description/>`` that would erase it.
   - a well-formed feed: status ``ok``;
   - a feed that is not well-formed but from which feedparser recovered entries: status
     ``partial``, the entries are kept, the reason is kept in ``error``; when the document does
     not end with its root's closing tag (truncated) its last entry is dropped, since the cut
     may have gone through it (it comes back whole on the next poll, nothing being committed);
   - no entries and not well-formed, an HTML page, an XML document that is not RSS/Atom, an
     empty body: status ``error``, ``"not a feed: ..."`` with feedparser's ``bozo_exception``.
6. **Items**: each entry through :meth:`NewsItem.create` (HTML, scripts and control characters
   reduced to plain text, sizes bounded, a missing or future time marked ``time_estimated``).
   An entry that fails (no title, no usable link or GUID) is counted as rejected with its reason.
7. **Dedup and filter**: an entry whose article id (or, within the same source, whose GUID) is
   already in the :class:`SeenStore`, or repeats an earlier entry of the same document, is a
   duplicate; with ``bitcoin_only`` an entry that does not mention Bitcoin is "filtered".
   For every poll ``fetched == rejected + duplicates + filtered + new``.
8. **Schedule**: ``next_poll_at`` is always set (success: ``now + interval_s``); ``None``
   only for a disabled source.

Delivery: nothing lost, nothing published twice across a restart
-----------------------------------------------------------------
``poll`` only *reads* the :class:`SeenStore`; it returns the candidates that are not in it yet.
The actor publishes them, waits until the broker has confirmed every send, and only then calls
:meth:`FeedPoller.commit`, which records them in the store. A crash between the two loses
nothing (the next process polls, finds them not seen, publishes again: at-least-once, and the
article id makes the repeat idempotent downstream); a restart after ``commit`` publishes
nothing twice. For the same reason the ETag/Last-Modified of a response are only used for the
next conditional GET once every candidate of that response was committed, and never after a
``partial`` parse; otherwise a 304 could hide items that were never published.

The loop an actor runs (sketch)::

    for poller in pollers:
        if poller.due(now):
            result = poller.poll(now)
            for item in result.items:
                sender.send(item, key=item.id)
            sender.wait()              # raises if any send failed: no commit
            poller.commit(result.items)

A :class:`FeedPoller` is not thread-safe: one thread polls and commits; another may read
``poller.health.to_dict()``.
"""

from __future__ import annotations

import calendar
import dataclasses
import io
import json
import logging
import os
import random
import re
import socket
import sqlite3
import threading
import time
import xml.sax
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import feedparser
import httpx

from cluster.ids import BadURLError
from cluster.records import NewsItem, clean_text, format_time
from cluster.sources import MIN_INTERVAL_S, PrivateAddressError, Resolver, SourceConfig, resolve_checked

log = logging.getLogger(__name__)

USER_AGENT = "btcpulse/0.1 (+https://github.com/btcpulse)"
# Reddit's API rules ask for "<platform>:<app id>:<version> (by ...)" and throttle generic
# User-Agents hard.
REDDIT_USER_AGENT = "server:btcpulse:0.1 (+https://github.com/btcpulse)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
ACCEPT_JSON = "application/json, */*;q=0.1"
REDDIT_BASE = "https://www.reddit.com"
X_STATUS_URL = "https://x.com/i/web/status/"
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=15.0, write=10.0, pool=10.0)
# The read timeout bounds each read, not the whole body: a server dripping one byte every
# 14 s would never trip it. The total deadline does.
DEFAULT_TOTAL_TIMEOUT_S = 60.0
DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # a large real feed is 100-500 KB
DEFAULT_BACKOFF_CAP_S = 3600.0
# Honour Retry-After, but a misconfigured server must not silence a source for days.
DEFAULT_MAX_RETRY_AFTER_S = 6 * 3600.0
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_ERROR_CHARS = 300

# Word-boundary match (lookarounds rather than \b, so that "₿" counts too). "btc" must stand
# alone: "WBTC" or "btcturk" are not about Bitcoin itself.
BITCOIN_PATTERN = re.compile(
    r"(?<!\w)(?:bitcoin(?:s|ers?)?|btc(?:usdt?)?|xbt|satoshis?|sats|lightning network|segwit|taproot"
    r"|halving|₿)(?!\w)",
    re.IGNORECASE,
)


def is_bitcoin_related(text: str) -> bool:
    """Whether ``text`` mentions Bitcoin (bitcoin, BTC, XBT, satoshi, sats, Lightning Network,
    SegWit, Taproot, halving, ₿), as a whole word, any case."""
    return BITCOIN_PATTERN.search(text) is not None


# --- dedup that survives a restart ---------------------------------------------------------------


class SeenStore:
    """Keys (article ids) already published, in a SQLite file, with bounded retention.

    Contract: :meth:`contains` never writes; :meth:`add_new` records keys and returns those that
    were not there before. Rows older than ``retention_s`` (default 30 days, far longer than any
    feed keeps an item) are pruned, and beyond ``max_rows`` the oldest go first. A pruned item
    that a feed still lists would be published again; that is harmless downstream (same id).
    Safe to share between the pollers of one process (one lock); one process per file.
    """

    SCHEMA_VERSION = 1

    def __init__(
        self, path: str | Path, *, retention_s: float = 30 * 86400.0, max_rows: int = 200_000
    ) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.max_rows = max_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives a power cut too; the write rate is a few rows a minute.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, first_seen REAL NOT NULL) WITHOUT ROWID"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS seen_first_seen ON seen(first_seen)")
        self._db.execute(f"PRAGMA user_version={self.SCHEMA_VERSION}")

    def contains(self, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` already recorded."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(wanted), 500):  # stay under SQLite's bound-variable limit
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key FROM seen WHERE key IN ({marks})", chunk)  # noqa: S608  # only "?" marks are interpolated
                found.update(r[0] for r in rows)
        return found

    def add_new(self, keys: Iterable[str], now: float | None = None) -> set[str]:
        """Record ``keys`` (one transaction); return those that were not recorded before."""
        stamp = time.time() if now is None else now
        new: set[str] = set()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key in dict.fromkeys(keys):
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO seen (key, first_seen) VALUES (?, ?)", (key, stamp)
                    )
                    if cur.rowcount == 1:
                        new.add(key)
                self._prune(stamp)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM seen WHERE first_seen < ?", (now - self.retention_s,))
        (count,) = self._db.execute("SELECT COUNT(*) FROM seen").fetchone()
        if count > self.max_rows:
            self._db.execute(
                "DELETE FROM seen WHERE key IN (SELECT key FROM seen ORDER BY first_seen, key LIMIT ?)",
                (count - self.max_rows,),
            )

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM seen").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SeenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- results and health --------------------------------------------------------------------------


@dataclass
class SourceHealth:
    """The running state of one source, for ``status`` and the API (:meth:`to_dict`).

    Counters are cumulative over the poller's life: ``fetched`` entries seen in feeds (every
    poll counts the whole feed again), of which ``rejected`` failed validation, ``duplicates``
    were already published, ``filtered`` failed ``bitcoin_only``; ``new`` counts items
    *committed* (published). ``errors`` counts failed polls; ``last_status`` is the last HTTP
    status or error text; times are ISO-8601 UTC strings.
    """

    name: str
    kind: str
    enabled: bool
    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    filtered: int = 0
    errors: int = 0
    last_status: int | str | None = None
    last_poll_at: str | None = None
    last_success_at: str | None = None
    last_error: str | None = None
    next_poll_at: str | None = None
    consecutive_failures: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PollResult:
    """The outcome of one poll.

    ``status``: ``ok`` (a well-formed feed), ``partial`` (a broken feed, recovered entries kept,
    reason in ``error``), ``not_modified`` (304), ``error`` (nothing parsed; reason in
    ``error``), ``disabled``. ``items`` are the candidates not yet in the SeenStore, in feed
    order: publish them, then :meth:`FeedPoller.commit` them.
    """

    source: str
    status: str
    next_poll_at: datetime | None
    http_status: int | None = None
    items: list[NewsItem] = field(default_factory=list)
    fetched: int = 0
    duplicates: int = 0
    rejected: int = 0
    filtered: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def new(self) -> int:
        return len(self.items)


class FeedError(Exception):
    """A poll that failed for a reason worth showing (too large, not a feed, refused target)."""

    def __init__(self, reason: str, *, http_status: int | None = None, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
        self.retry_after_s = retry_after_s


# --- pure helpers --------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date), never
    negative; ``None`` when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**(failures-1))]``,
    floored at ``MIN_INTERVAL_S`` so a failing feed is never hit more than twice a minute."""
    ceiling = min(max(cap_s, base_s), base_s * 2.0 ** max(0, min(failures - 1, 30)))
    return max(float(MIN_INTERVAL_S), rng.uniform(0.0, ceiling))


def read_bounded(response: httpx.Response, max_bytes: int, deadline: float | None = None) -> bytes:
    """The decoded body of a streamed ``response``, at most ``max_bytes``.

    Raises :class:`FeedError` "response too large" as soon as the declared length or the
    decoded bytes pass ``max_bytes`` (decompression is bounded too: ``max_length``), and
    "timeout" past ``deadline`` (a ``time.monotonic()`` value).
    """
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    declared = response.headers.get("content-length", "")
    if encoding in ("", "identity") and declared.isdigit() and int(declared) > max_bytes:
        raise FeedError(f"response too large: Content-Length {declared} > {max_bytes} bytes")
    if encoding in ("gzip", "x-gzip"):
        decoder: Any = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding in ("", "identity"):
        decoder = None
    else:
        raise FeedError(f"unsupported Content-Encoding {encoding[:40]!r}")
    body = bytearray()
    too_large = FeedError(f"response too large: more than {max_bytes} bytes")
    try:
        for chunk in response.iter_raw(_CHUNK):
            if deadline is not None and time.monotonic() > deadline:
                raise FeedError("timeout: body not received within the total deadline")
            if decoder is None:
                body += chunk
                if len(body) > max_bytes:
                    raise too_large
                continue
            data = chunk
            while data:
                # max_length bounds what one call may inflate (0 would mean "unbounded"); a
                # chunk at a time, so no second multi-MB buffer exists beside ``body``.
                body += decoder.decompress(data, min(_CHUNK * 4, max_bytes + 1 - len(body)))
                if len(body) > max_bytes:
                    raise too_large
                data = decoder.unconsumed_tail
    except zlib.error as exc:
        raise FeedError(f"bad {encoding} body: {exc}") from None
    return bytes(body)


_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*\bencoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9._-]+)", re.IGNORECASE)
# The root's closing tag at the end, maybe followed by comments (WordPress caches append them).
_CLOSED_ROOT = re.compile(
    rb"</(?:[\w.-]+:)?(?:rss|feed|RDF)\s*>\s*(?:<!--.*?-->\s*)*$", re.IGNORECASE | re.DOTALL
)
_HTML_START = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)\b", re.IGNORECASE | re.DOTALL)
# An empty <description/>, <dc:description/>, <summary/>, <itunes:summary/> (self-closed or not).
# feedparser maps all of them onto one ``summary`` field, so an empty one after a filled one
# erases it: CoinDesk's real feed follows every <description> with an empty <dc:description/>.
_EMPTY_SUMMARY = re.compile(
    rb"<((?:[A-Za-z_][\w.-]*:)?(?:description|summary))(?:\s[^<>]*?)?(?:/>|>\s*</\1\s*>)"
)
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def repair_utf8(body: bytes, content_type: str | None) -> tuple[bytes, bool]:
    """Replace invalid UTF-8 sequences by U+FFFD when the document is, or defaults to, UTF-8.

    The charset comes from the Content-Type, else the XML declaration, else UTF-8 (XML's
    default). A document in another declared charset, or with a UTF-16 BOM, is left to
    feedparser. Returns the bytes and whether anything was replaced.
    """
    if body.startswith(_BOMS[1:]):
        return body, False
    match = _CHARSET.search(content_type or "")
    declared = match.group(1) if match else None
    if declared is None:
        decl = _XML_DECL_ENCODING.match(body[:512])
        declared = decl.group(1).decode("ascii") if decl else "utf-8"
    if declared.lower() not in _UTF8_NAMES:
        return body, False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("utf-8", errors="replace").encode("utf-8"), True
    return body, False


@dataclass
class ParsedFeed:
    """What :func:`parse_feed` recovered: ``status`` ok / partial / error, the entries kept,
    and the reason (feedparser's ``bozo_exception`` text) when the feed was not clean."""

    status: str
    entries: list[Any]
    reason: str | None = None
    truncated: bool = False


def parse_feed(body: bytes, *, content_type: str | None = None, base_url: str | None = None) -> ParsedFeed:
    """Parse a feed document; never raises. See the module docstring (stage 5) for the policy."""
    if not body.strip():
        return ParsedFeed("error", [], "not a feed: empty body")
    body, repaired = repair_utf8(body, content_type)
    body = _EMPTY_SUMMARY.sub(b"", body)
    headers = {"content-type": content_type or "application/xml"}
    if base_url:
        headers["content-location"] = base_url  # base for relative links
    try:
        # A stream, never bytes: feedparser opens a byte string that names a file as a path.
        parsed = feedparser.parse(io.BytesIO(body), response_headers=headers)
    except Exception as exc:  # feedparser on hostile input: a bad feed, never a crash
        return ParsedFeed("error", [], f"not a feed: parser failed: {type(exc).__name__}: {exc}"[:300])
    entries = list(parsed.get("entries") or [])
    bozo = parsed.get("bozo_exception") if parsed.get("bozo") else None
    malformed = isinstance(bozo, xml.sax.SAXException)
    bozo_text = f"{type(bozo).__name__}: {bozo}" if bozo is not None else None
    if not entries:
        if _HTML_START.match(body[:4096]):
            return ParsedFeed("error", [], f"not a feed: an HTML page ({bozo_text or 'no RSS/Atom root'})")
        if malformed:
            cut = _CLOSED_ROOT.search(body[-512:]) is None
            what = f"truncated document ({bozo_text})" if cut else bozo_text
            return ParsedFeed("error", [], f"not a feed: {what}", truncated=cut)
        if not parsed.get("version"):
            return ParsedFeed("error", [], "not a feed: no RSS/Atom root element")
        return ParsedFeed("ok", [], "invalid UTF-8 replaced" if repaired else None)
    if not malformed:
        notes = [n for n in (bozo_text, "invalid UTF-8 replaced" if repaired else None) if n]
        return ParsedFeed("ok", entries, "; ".join(notes) or None)
    truncated = _CLOSED_ROOT.search(body[-512:]) is None
    if truncated:
        entries = entries[:-1]  # the cut may have gone through the last entry
        if not entries:
            return ParsedFeed("error", [], f"not a feed: truncated document ({bozo_text})", truncated=True)
    detail = "truncated, last entry dropped" if truncated else "not well-formed"
    return ParsedFeed("partial", entries, f"broken feed ({detail}): {bozo_text}", truncated=truncated)


def entry_time(entry: Any) -> datetime | None:
    """The entry's publication time in UTC (published, else updated, else created), or None.
    feedparser has already converted the feed's time zone to UTC."""
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (OverflowError, ValueError, OSError, TypeError):
                continue
    return None


def entry_summary(entry: Any) -> str | None:
    """The entry's summary/description, else its first content block."""
    text = entry.get("summary") or entry.get("description")
    if text:
        return str(text)
    for block in entry.get("content") or []:
        value = block.get("value") if hasattr(block, "get") else None
        if value:
            return str(value)
    return None


def _reject_reason(exc: Exception) -> str:
    # A fixed set of reasons: the counters must not grow one key per bad URL.
    if isinstance(exc, BadURLError):
        return "no usable link or guid"
    text = str(exc)
    return text if text in ("empty title",) else f"invalid entry ({type(exc).__name__})"


# --- other kinds: one neutral entry per item ----------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One item as a source gave it, before :meth:`NewsItem.create` validates it. ``problem``
    is set (to a rejection reason) when the element could not be read as an item at all."""

    title: str = ""
    url: str = ""
    guid: str | None = None
    summary: str | None = None
    published_at: datetime | None = None
    problem: str | None = None


def _rss_entry(entry: Any) -> Entry:
    guid = entry.get("id") or entry.get("guid")
    return Entry(
        title=str(entry.get("title") or ""),
        url=str(entry.get("link") or ""),
        guid=str(guid) if guid else None,
        summary=entry_summary(entry),
        published_at=entry_time(entry),
    )


def parse_rss(body: bytes, *, content_type: str | None = None, base_url: str | None = None) -> ParsedFeed:
    """:func:`parse_feed`, with the entries as :class:`Entry`; never raises."""
    feed = parse_feed(body, content_type=content_type, base_url=base_url)
    return dataclasses.replace(feed, entries=[_rss_entry(e) for e in feed.entries])


class WrongShape(ValueError):
    """A JSON document that is not what the API documents."""


def _text(value: Any) -> str:
    """A JSON string as is; a JSON integer as digits (ids); anything else empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(repr(str(k)[:30]) for k in list(value)[:6])
        return f"an object with keys {keys}" if keys else "an empty object"
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def epoch_time(value: Any) -> datetime | None:
    """A Unix time (number or numeric string) as aware UTC, or None."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value) if isinstance(value, int | float | str) else None
        return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def iso_time(value: Any) -> datetime | None:
    """An ISO-8601 time (``2026-01-01T12:00:00Z``, ``...00.000Z``, with an offset) as aware UTC,
    or None. A time without a zone is taken as UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def gdelt_time(value: Any) -> datetime | None:
    """GDELT's ``seendate`` (``20260101T120000Z``, UTC) as aware UTC, or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


_NOT_OBJECT = "invalid entry (not an object)"


def _reddit_entries(doc: Any) -> list[Entry]:
    data = doc.get("data") if isinstance(doc, dict) else None
    children = data.get("children") if isinstance(data, dict) else None
    if not isinstance(children, list):
        raise WrongShape(
            f'expected {{"kind": "Listing", "data": {{"children": [...]}}}}, got {_json_type(doc)}'
        )
    if doc.get("kind", "Listing") != "Listing":
        raise WrongShape(f"kind {str(doc.get('kind'))[:40]!r}, expected 'Listing'")
    out = []
    for child in children:
        post = child.get("data") if isinstance(child, dict) else None
        if not isinstance(post, dict):
            out.append(Entry(problem=_NOT_OBJECT))
            continue
        if child.get("kind", "t3") != "t3":
            out.append(Entry(problem="invalid entry (not a post)"))
            continue
        permalink = _text(post.get("permalink"))
        post_id = _text(post.get("id"))
        out.append(
            Entry(
                title=_text(post.get("title")),
                url=REDDIT_BASE + permalink if permalink.startswith("/") else _text(post.get("url")),
                guid=_text(post.get("name")) or (f"t3_{post_id}" if post_id else None),
                summary=_text(post.get("selftext")) or None,
                published_at=epoch_time(post.get("created_utc")),
            )
        )
    return out


def _cryptopanic_entries(doc: Any) -> list[Entry]:
    if isinstance(doc, dict) and "results" not in doc and ("info" in doc or "status" in doc):
        # CryptoPanic's error answer: {"status": "Incomplete", "info": "Token not found"}
        raise WrongShape(f"API error: {_text(doc.get('info')) or _text(doc.get('status'))}"[:200])
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        raise WrongShape(f'expected {{"results": [...]}}, got {_json_type(doc)}')
    out = []
    for post in results:
        if not isinstance(post, dict):
            out.append(Entry(problem=_NOT_OBJECT))
            continue
        out.append(
            Entry(
                title=_text(post.get("title")),
                url=_text(post.get("original_url")) or _text(post.get("url")),
                guid=_text(post.get("id")) or None,
                summary=_text(post.get("description")) or None,
                published_at=iso_time(post.get("published_at")) or iso_time(post.get("created_at")),
            )
        )
    return out


def _gdelt_entries(doc: Any) -> list[Entry]:
    if not isinstance(doc, dict):
        raise WrongShape(f'expected {{"articles": [...]}}, got {_json_type(doc)}')
    articles = doc.get("articles", [])  # GDELT answers {} when nothing matched
    if not isinstance(articles, list):
        raise WrongShape(f'expected {{"articles": [...]}}, got "articles" as {_json_type(articles)}')
    out = []
    for article in articles:
        if not isinstance(article, dict):
            out.append(Entry(problem=_NOT_OBJECT))
            continue
        out.append(
            Entry(
                title=_text(article.get("title")),
                url=_text(article.get("url")),
                published_at=gdelt_time(article.get("seendate")),
            )
        )
    return out


def _x_entries(doc: Any) -> list[Entry]:
    if not isinstance(doc, dict):
        raise WrongShape(f'expected {{"data": [...]}}, got {_json_type(doc)}')
    if "data" not in doc:
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            raise WrongShape(
                f"API error: {_text(first.get('title'))} {_text(first.get('detail'))}".strip()[:200]
            )
        if isinstance(doc.get("meta"), dict):  # {"meta": {"result_count": 0}}: nothing new
            return []
        raise WrongShape(f'expected {{"data": [...]}}, got {_json_type(doc)}')
    tweets = doc["data"]
    if not isinstance(tweets, list):
        raise WrongShape(f'expected {{"data": [...]}}, got "data" as {_json_type(tweets)}')
    out = []
    for tweet in tweets:
        if not isinstance(tweet, dict):
            out.append(Entry(problem=_NOT_OBJECT))
            continue
        tweet_id = _text(tweet.get("id"))
        if not tweet_id.isdigit() or not tweet_id.isascii():
            out.append(Entry(problem="invalid entry (no post id)"))
            continue
        out.append(
            Entry(
                title=_text(tweet.get("text")),
                url=X_STATUS_URL + tweet_id,
                guid=tweet_id,
                published_at=iso_time(tweet.get("created_at")),
            )
        )
    return out


# kind -> (what the document should be, for error texts; its entries)
_JSON_KINDS: dict[str, tuple[str, Callable[[Any], list[Entry]]]] = {
    "reddit": ("a Reddit listing", _reddit_entries),
    "cryptopanic": ("a CryptoPanic posts response", _cryptopanic_entries),
    "gdelt": ("a GDELT article list", _gdelt_entries),
    "x": ("an X search response", _x_entries),
}


def _body_start(body: bytes) -> str:
    return clean_text(body[:400].decode("utf-8", errors="replace"), 80)


def parse_json_document(kind: str, body: bytes) -> ParsedFeed:
    """Parse the JSON answer of a ``kind`` API into :class:`Entry` items; never raises.

    Status ``ok`` with the entries (an element that is not an object becomes an entry with a
    ``problem``); ``error`` with the reason when the body is empty, not JSON (the reason quotes
    the start of the body: GDELT answers a bad query with a line of text) or not of the
    documented shape.
    """
    what, entries_of = _JSON_KINDS[kind]
    if not body.strip():
        return ParsedFeed("error", [], f"not {what}: empty body")
    text = body.decode("utf-8", errors="replace").removeprefix("\ufeff")
    try:
        doc = json.loads(text)
    except RecursionError:
        return ParsedFeed("error", [], f"not {what}: JSON nested too deeply")
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        return ParsedFeed("error", [], f"not {what}: not JSON ({exc}); body starts {_body_start(body)!r}")
    try:
        entries = entries_of(doc)
    except WrongShape as exc:
        return ParsedFeed("error", [], f"not {what}: {exc}")
    except RecursionError:
        return ParsedFeed("error", [], f"not {what}: JSON nested too deeply")
    return ParsedFeed("ok", list(entries))


# --- credentials ----------------------------------------------------------------------------------


def _read_token(config: SourceConfig, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(token, why disabled) for ``config``: (None, None) for a kind without a token."""
    if not config.token_env:
        return None, None
    token = (environ.get(config.token_env) or "").strip()
    if not token:
        return None, f"disabled: set {config.token_env}"
    if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
        return None, f"disabled: {config.token_env} is not a valid token (spaces or control characters)"
    return token, None


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return text


class _SecretFilter(logging.Filter):
    """Redacts registered tokens from log records (httpx logs every request URL at INFO)."""

    LOGGERS = ("httpx", "httpcore")

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        with self._lock:
            self._secrets = self._secrets | {secret}
            for name in self.LOGGERS:
                logger = logging.getLogger(name)
                if self not in logger.filters:
                    logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a broken record: leave it to logging's own error handling
                return True
            redacted = _redact(message, secrets)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


_LOG_REDACTOR = _SecretFilter()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def parse_rate_limit_reset(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds until a rate-limit window resets, from X's ``x-rate-limit-reset`` (epoch
    seconds) or Reddit's ``x-ratelimit-reset`` (seconds from now); None when absent/unreadable."""
    x_reset = (headers.get("x-rate-limit-reset") or "").strip()
    if x_reset.isdigit() and x_reset.isascii():
        return max(0.0, float(x_reset) - now.timestamp())
    reddit_reset = (headers.get("x-ratelimit-reset") or "").strip()
    try:
        seconds = float(reddit_reset)
    except ValueError:
        return None
    return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None


# --- the poller ----------------------------------------------------------------------------------


class FeedPoller:
    """Polls one source (any kind of :data:`cluster.sources.KINDS`) through an injected ``httpx.Client``.

    Contract: :meth:`poll` makes at most one conditional GET (plus redirects), never raises for
    anything the network or the source does, always sets ``next_poll_at`` (``None`` when
    disabled), and returns items not yet committed; :meth:`commit` records published items.
    ``environ`` (default ``os.environ``) is where the token named by ``config.token_env`` is
    read, once, here. See the module docstring.
    """

    def __init__(
        self,
        config: SourceConfig,
        client: httpx.Client,
        store: SeenStore,
        *,
        rng: random.Random | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
        max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
        max_title_chars: int = 500,
        max_summary_chars: int = 2000,
        max_future_skew_s: float = 300.0,
        resolver: Resolver = socket.getaddrinfo,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        # Reddit also serves each listing as RSS/Atom (".../new/.rss").
        self._as_rss = config.kind == "rss" or (
            config.kind == "reddit" and urlsplit(config.url).path.endswith(".rss")
        )
        self._token, self._disabled = _read_token(config, os.environ if environ is None else environ)
        if self._token:
            _LOG_REDACTOR.add(self._token)
        self._client = client
        self._store = store
        self._rng = rng or random.Random()  # noqa: S311  # jitter, not cryptography
        self._timeout = timeout
        self._total_timeout_s = total_timeout_s
        self._max_bytes = max_bytes
        self._backoff_cap_s = backoff_cap_s
        self._max_retry_after_s = max_retry_after_s
        self._max_title_chars = max_title_chars
        self._max_summary_chars = max_summary_chars
        self._max_future_skew_s = max_future_skew_s
        self._resolver = resolver
        # Validators in use: from the last response whose candidates were all committed.
        self._etag: str | None = None
        self._last_modified: str | None = None
        # From the last poll, waiting for commit: candidate id -> its GUID key, and validators.
        self._pending: dict[str, str | None] = {}
        self._pending_validators: tuple[str | None, str | None] | None = None
        self._next_poll_at: datetime | None = None
        self.health = SourceHealth(
            name=config.name,
            kind=config.kind,
            enabled=config.enabled and self._disabled is None,
            last_error=self._disabled if config.enabled else None,
        )

    def __repr__(self) -> str:
        return (
            f"FeedPoller(name={self.config.name!r}, kind={self.config.kind!r}, "
            f"url={self.config.url!r}, enabled={self.health.enabled})"
        )

    def _redact(self, text: str) -> str:
        return _redact(text, (self._token,)) if self._token else text

    # -- schedule --

    @property
    def next_poll_at(self) -> datetime | None:
        """When the next poll is due; ``None`` before the first poll (due at once)."""
        return self._next_poll_at

    def due(self, now: datetime) -> bool:
        return (
            self.config.enabled
            and self._disabled is None
            and (self._next_poll_at is None or now >= self._next_poll_at)
        )

    def _guid_key(self, guid: str | None) -> str | None:
        # Catches an edited item whose link (so its article id) changed but whose GUID did not.
        # Scoped to the source: a GUID is only promised to be unique within its feed.
        return f"guid:{self.config.name}:{guid.strip()}" if guid and guid.strip() else None

    # -- poll --

    def poll(self, now: datetime) -> PollResult:
        """One conditional GET of the feed at time ``now`` (aware UTC); see the module docstring."""
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        if not self.config.enabled or self._disabled is not None:
            self._next_poll_at = None
            self.health.next_poll_at = None
            return PollResult(self.config.name, "disabled", None, error=self._disabled)
        self.health.last_poll_at = format_time(now)
        try:
            return self._poll(now)
        except FeedError as exc:
            return self._fail(now, exc.reason, exc.http_status, exc.retry_after_s)
        except PrivateAddressError as exc:
            return self._fail(now, f"refused: {exc}", None, None)
        except (ValueError, httpx.InvalidURL) as exc:  # a redirect to something that is no URL
            return self._fail(now, f"bad URL: {exc}", None, None)
        except socket.gaierror as exc:
            return self._fail(now, f"DNS failure: {exc}", None, None)
        except httpx.TimeoutException as exc:
            return self._fail(now, f"timeout: {type(exc).__name__}", None, None)
        except httpx.HTTPError as exc:
            return self._fail(now, f"{type(exc).__name__}: {exc}", None, None)
        except OSError as exc:
            return self._fail(now, f"network error: {exc}", None, None)

    def _request_url(self) -> str:
        """The URL to GET: the configured one, plus CryptoPanic's token in the query."""
        url = self.config.url
        if self.config.kind == "cryptopanic" and self._token:
            parts = urlsplit(url)
            param = "auth_token=" + quote(self._token, safe="")
            query = f"{parts.query}&{param}" if parts.query else param
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        return url

    def _headers(self) -> dict[str, str]:
        headers = {
            "User-Agent": REDDIT_USER_AGENT if self.config.kind == "reddit" else USER_AGENT,
            "Accept": ACCEPT if self._as_rss else ACCEPT_JSON,
            "Accept-Encoding": "gzip",
        }
        if self.config.kind == "x" and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._etag:
            headers["If-None-Match"] = self._etag
        if self._last_modified:
            headers["If-Modified-Since"] = self._last_modified
        return headers

    def _poll(self, now: datetime) -> PollResult:
        deadline = time.monotonic() + self._total_timeout_s
        url = self._request_url()
        headers = self._headers()
        for _hop in range(MAX_REDIRECTS + 1):
            resolve_checked(url, allow_private=self.config.allow_private, resolver=self._resolver)
            request = self._client.build_request("GET", url, headers=headers, timeout=self._timeout)
            response = self._client.send(request, stream=True, follow_redirects=False)
            try:
                status = response.status_code
                if status in _REDIRECTS and response.headers.get("location"):
                    target = response.url.join(response.headers["location"])
                    if target.scheme not in ("http", "https"):
                        raise FeedError(f"redirect to a non-http URL ({target.scheme})", http_status=status)
                    if _origin(target) != _origin(response.url):
                        headers.pop("Authorization", None)  # a bearer token stays with its origin
                    url = str(target)
                    continue
                if status == 304:
                    return self._not_modified(now)
                if status in (429, 503):
                    wait = parse_retry_after(response.headers.get("retry-after"), now)
                    if wait is None:
                        wait = parse_rate_limit_reset(response.headers, now)
                    raise FeedError(f"HTTP {status}", http_status=status, retry_after_s=wait)
                if status != 200:
                    raise FeedError(f"HTTP {status}", http_status=status)
                body = read_bounded(response, self._max_bytes, deadline)
                validators = (response.headers.get("etag"), response.headers.get("last-modified"))
                content_type = response.headers.get("content-type")
                final_url = str(response.url)
            finally:
                response.close()
            return self._parsed(now, body, content_type, final_url, validators)
        raise FeedError(f"more than {MAX_REDIRECTS} redirects")

    def _not_modified(self, now: datetime) -> PollResult:
        self._succeed(now, 304)
        return PollResult(self.config.name, "not_modified", self._next_poll_at, http_status=304)

    def _parsed(
        self,
        now: datetime,
        body: bytes,
        content_type: str | None,
        final_url: str,
        validators: tuple[str | None, str | None],
    ) -> PollResult:
        if self._as_rss:
            feed = parse_rss(body, content_type=content_type, base_url=final_url)
        else:
            feed = parse_json_document(self.config.kind, body)
        if feed.status == "error":
            raise FeedError(feed.reason or "not a feed", http_status=200)
        items: list[NewsItem] = []
        guid_keys: list[str | None] = []
        reasons: dict[str, int] = {}
        for entry in feed.entries:
            if entry.problem:
                reasons[entry.problem] = reasons.get(entry.problem, 0) + 1
                continue
            guid = entry.guid
            try:
                item = NewsItem.create(
                    source=self.config.name,
                    url=entry.url,
                    guid=guid,
                    title=entry.title,
                    summary=entry.summary,
                    published_at=entry.published_at,
                    fetched_at=now,
                    max_title_chars=self._max_title_chars,
                    max_summary_chars=self._max_summary_chars,
                    max_future_skew_s=self._max_future_skew_s,
                )
            except (ValueError, TypeError) as exc:
                reason = _reject_reason(exc)
                reasons[reason] = reasons.get(reason, 0) + 1
                continue
            items.append(item)
            guid_keys.append(self._guid_key(guid))

        seen = self._store.contains([i.id for i in items] + [g for g in guid_keys if g])
        candidates: list[NewsItem] = []
        pending: dict[str, str | None] = {}
        this_doc: set[str] = set()
        duplicates = filtered = 0
        for item, gkey in zip(items, guid_keys, strict=True):
            keys = {item.id} | ({gkey} if gkey else set())
            if keys & seen or keys & this_doc:
                duplicates += 1
                continue
            this_doc |= keys
            if self.config.bitcoin_only and not is_bitcoin_related(f"{item.title} {item.summary}"):
                filtered += 1
                continue
            candidates.append(item)
            pending[item.id] = gkey

        rejected = sum(reasons.values())
        fetched = len(feed.entries)
        h = self.health
        h.fetched += fetched
        h.duplicates += duplicates
        h.rejected += rejected
        h.filtered += filtered
        for reason, n in reasons.items():
            if reason in h.rejected_reasons or len(h.rejected_reasons) < 20:
                h.rejected_reasons[reason] = h.rejected_reasons.get(reason, 0) + n

        self._pending = pending
        # A partial parse may have missed items: never let its validators turn the next poll
        # into a 304 over them.
        self._pending_validators = validators if feed.status == "ok" else None
        if not pending:
            self._adopt_validators()
        self._succeed(now, 200)
        if feed.status == "partial":
            self.health.last_error = self._redact(feed.reason or "")
        return PollResult(
            self.config.name,
            feed.status,
            self._next_poll_at,
            http_status=200,
            items=candidates,
            fetched=fetched,
            duplicates=duplicates,
            rejected=rejected,
            filtered=filtered,
            rejected_reasons=reasons,
            error=self._redact(feed.reason or "") if feed.status == "partial" else None,
        )

    def _adopt_validators(self) -> None:
        if self._pending_validators is not None:
            self._etag, self._last_modified = self._pending_validators
        self._pending_validators = None

    def _succeed(self, now: datetime, status: int) -> None:
        self._next_poll_at = now + timedelta(seconds=self.config.interval)
        h = self.health
        h.last_status = status
        h.last_success_at = format_time(now)
        h.consecutive_failures = 0
        h.next_poll_at = format_time(self._next_poll_at)

    def _fail(
        self, now: datetime, reason: str, http_status: int | None, retry_after_s: float | None
    ) -> PollResult:
        reason = self._redact(reason)[:_MAX_ERROR_CHARS]
        h = self.health
        h.errors += 1
        h.consecutive_failures += 1
        h.last_error = reason
        h.last_status = http_status if http_status is not None and http_status != 200 else reason
        if retry_after_s is not None:
            # The server said when; polling before our own interval gains nothing either.
            delay = min(max(retry_after_s, float(self.config.interval)), self._max_retry_after_s)
        else:
            delay = backoff_delay(
                h.consecutive_failures, float(self.config.interval), self._backoff_cap_s, self._rng
            )
        self._next_poll_at = now + timedelta(seconds=delay)
        h.next_poll_at = format_time(self._next_poll_at)
        log.info("feed %s: %s; next poll in %.0f s", self.config.name, reason, delay)
        return PollResult(
            self.config.name, "error", self._next_poll_at, http_status=http_status, error=reason
        )

    # -- commit --

    def commit(self, items: Iterable[NewsItem], now: float | None = None) -> int:
        """Record ``items`` as published (call only after the broker confirmed every send).

        Records each item's id and, for items of the last poll, its GUID key. Once every
        candidate of the last poll is committed, that response's ETag/Last-Modified are used
        for the next conditional GET. Returns how many items were newly recorded.
        """
        ids = [item.id for item in items]
        keys = list(ids)
        for item_id in ids:
            gkey = self._pending.pop(item_id, None)
            if gkey:
                keys.append(gkey)
        new = self._store.add_new(keys, now)
        recorded = sum(1 for i in ids if i in new)
        self.health.new += recorded
        if not self._pending:
            self._adopt_validators()
        return recorded

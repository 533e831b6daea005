"""The records that travel on btcpulse's topics, defined once.

One frozen dataclass per topic, each with a ``schema_version``. Topic objects
(:mod:`cluster.topics`) own their serialization, so no caller encodes bytes by hand.

Times are ISO-8601 strings in UTC (``2022-07-05T04:24:00Z``) on the wire, so a message is
readable as it is; :func:`parse_time` and :func:`format_time` convert.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import re
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from cluster.ids import article_id, canonical_url, tick_id

R = TypeVar("R", bound="Record")

_TAG = re.compile(r"<[^>]*>")
_SCRIPT_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_WS = re.compile(r"\s+")
# Literal escape sequences left by scrapers ("\xa0", "\r\n" as text).
_LITERAL_ESCAPES = re.compile(r"\\x[0-9a-fA-F]{2}|\\[rnt]")
# C0/C1 controls (but tab and newline), and the Unicode format/surrogate/private-use ranges
# most abused in titles (bidi overrides, zero-width characters).
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ud800-\udfff\ue000-\uf8ff]"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime | float) -> str:
    """ISO-8601 UTC with a ``Z`` and whole seconds or milliseconds."""
    if isinstance(t, int | float):
        dt = datetime.fromtimestamp(t, UTC)
    else:  # a time without zone is UTC, as in parse_time
        dt = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    text = dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time; a time without zone is taken as UTC."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def to_ts(text: str) -> float:
    return parse_time(text).timestamp()


MAX_URL_CHARS = 4096
MAX_SOURCE_CHARS = 64


def clean_text(raw: str | bytes | None, limit: int) -> str:
    """Untrusted text reduced to bounded plain text.

    Bytes are decoded as UTF-8 with replacement (never an exception); script/style
    elements are dropped with their content, other tags are removed, entities are
    decoded once, control characters removed, white space folded, and the result is
    cut at ``limit`` characters (with an ellipsis).
    """
    if raw is None:
        return ""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = text[: limit * 8]  # bound the work before the regexes run
    text = _SCRIPT_STYLE.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _LITERAL_ESCAPES.sub(" ", text)
    text = _CONTROL.sub("", text)
    text = _WS.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


@dataclass(frozen=True, slots=True)
class Record:
    """Base of every topic record: a schema version and conversion to and from plain dicts."""

    SCHEMA_VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Build from a decoded message, checking every field's type.

        Unknown keys (a newer minor version) are ignored. A value of the wrong type, or a time
        field that does not parse, raises ``TypeError``/``ValueError``: such a message is a
        poison message for the consumer that reads it, never a crash further down.
        """
        kinds = _field_kinds(cls)  # type: ignore[arg-type]  # classes are hashable
        kwargs = {}
        for name, value in data.items():
            kind = kinds.get(name)
            if kind is None:
                continue
            accepted, optional, item_types = kind
            if value is None:
                if not optional:
                    raise TypeError(f"{cls.__name__}.{name} must not be null")
            elif isinstance(value, bool) and bool not in accepted:
                raise TypeError(f"{cls.__name__}.{name}: expected {accepted[0].__name__}, got bool")
            elif not isinstance(value, accepted):
                raise TypeError(
                    f"{cls.__name__}.{name}: expected {accepted[0].__name__}, got {type(value).__name__}"
                )
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, bool) or not isinstance(item, item_types):
                        raise TypeError(
                            f"{cls.__name__}.{name}[{i}]: expected {item_types[0].__name__},"
                            f" got {type(item).__name__}"
                        )
            elif name in _TIME_FIELDS:
                try:
                    parse_time(str(value))
                except ValueError:
                    raise ValueError(
                        f"{cls.__name__}.{name}: not an ISO-8601 time: {str(value)[:80]!r}"
                    ) from None
            kwargs[name] = value
        return cls(**kwargs)


_TIME_FIELDS = frozenset(
    {"published_at", "fetched_at", "analyzed_at", "failed_at", "ts", "start", "peak", "end", "updated_at"}
)
_ACCEPTED: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), bool: (bool,), float: (float, int)}


@functools.cache
def _field_kinds(cls: type[Record]) -> dict[str, tuple[tuple[type, ...], bool, tuple[type, ...]]]:
    """name -> (accepted Python types, may be None, accepted item types of a list field)."""
    hints = typing.get_type_hints(cls)
    kinds: dict[str, tuple[tuple[type, ...], bool, tuple[type, ...]]] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        base = args[0] if optional else tp
        if typing.get_origin(base) is list:
            kinds[f.name] = ((list,), optional, _ACCEPTED[typing.get_args(base)[0]])
        else:
            kinds[f.name] = (_ACCEPTED[base], optional, ())
    return kinds


@dataclass(frozen=True, slots=True)
class NewsItem(Record):
    """A news article or post as collected (topic ``news.raw``)."""

    id: str
    source: str
    url: str
    title: str
    summary: str
    published_at: str
    fetched_at: str
    # True when the source gave no usable time and ``published_at`` is the fetch time.
    time_estimated: bool = False
    schema_version: int = 1

    @classmethod
    def create(
        cls,
        *,
        source: str,
        url: str,
        title: str | bytes,
        summary: str | bytes | None = None,
        published_at: datetime | None,
        fetched_at: datetime | None = None,
        guid: str | None = None,
        max_title_chars: int = 500,
        max_summary_chars: int = 2000,
        max_future_skew_s: float = 300.0,
    ) -> NewsItem:
        """Validate and normalise one collected item.

        Raises ``ValueError`` (``BadURLError`` is one) for an item that cannot be kept:
        no title, no usable URL/GUID. A missing time, or one further in the future than
        ``max_future_skew_s``, becomes the fetch time with ``time_estimated=True``.
        """
        fetched = _aware(fetched_at) if fetched_at else utcnow()
        published_at = _aware(published_at) if published_at else None
        clean_title = clean_text(title, max_title_chars)
        if not clean_title:
            raise ValueError("empty title")
        estimated = published_at is None or (published_at - fetched).total_seconds() > max_future_skew_s
        published = fetched if estimated or published_at is None else published_at
        try:
            canon = canonical_url(url) if url else ""
        except ValueError:
            if not (guid and guid.strip()):
                raise
            canon = ""  # a feed's GUID still identifies the item; the broken link is dropped
        return cls(
            id=article_id(canonical=canon or None, guid=guid),
            source=clean_text(source, MAX_SOURCE_CHARS) or "unknown",
            url=canon,
            title=clean_title,
            summary=clean_text(summary, max_summary_chars),
            published_at=format_time(published),
            fetched_at=format_time(fetched),
            time_estimated=estimated,
        )

    def bounded(self, max_title_chars: int = 500, max_summary_chars: int = 2000) -> NewsItem:
        """This item with its texts within the collectors' bounds.

        Items made by :meth:`create` already are; a message from another producer may not be
        (a 4 MB title fits a Pulsar message, and would then be stored, indexed and sent on).
        Raises ``ValueError`` for a URL longer than :data:`MAX_URL_CHARS`, which cannot be cut.
        """
        if len(self.url) > MAX_URL_CHARS:
            raise ValueError(f"NewsItem.url: {len(self.url):,} characters (at most {MAX_URL_CHARS:,})")
        title, summary, source = (
            clean_text(text, limit) if len(text) > limit else text
            for text, limit in (
                (self.title, max_title_chars),
                (self.summary, max_summary_chars),
                (self.source, MAX_SOURCE_CHARS),
            )
        )
        if (title, summary, source) == (self.title, self.summary, self.source):
            return self
        return dataclasses.replace(self, title=title, summary=summary, source=source)

    @property
    def published_ts(self) -> float:
        return to_ts(self.published_at)

    @property
    def text(self) -> str:
        """What the models read: the headline, then the summary."""
        return f"{self.title}. {self.summary}" if self.summary else self.title


@dataclass(frozen=True, slots=True)
class PriceTick(Record):
    """A BTC price observation (topic ``prices``): a trade/ticker (``interval_s`` 0,
    open = high = low = close) or a bar over ``[ts, ts + interval_s)``."""

    id: str
    source: str
    symbol: str
    ts: str
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    interval_s: int = 0
    schema_version: int = 1

    @classmethod
    def create(
        cls,
        *,
        source: str,
        symbol: str,
        ts: datetime,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float = 0.0,
        interval_s: int = 0,
        seq: str = "",
    ) -> PriceTick:
        values = (open, high, low, close)
        if any(not (v > 0 and v < 1e9) for v in values) or high < low:
            raise ValueError(f"implausible prices {values}")
        return cls(
            id=tick_id(source, symbol, ts.timestamp(), seq),
            source=source,
            symbol=symbol,
            ts=format_time(ts),
            open=float(open),
            high=float(high),
            low=float(low),
            close=float(close),
            volume=float(volume),
            interval_s=int(interval_s),
        )

    @property
    def ts_epoch(self) -> float:
        return to_ts(self.ts)


@dataclass(frozen=True, slots=True)
class ScoredArticle(Record):
    """An analysed article (topic ``news.scored``); its vector lives in Qdrant under ``id``."""

    id: str
    source: str
    url: str
    title: str
    summary: str
    published_at: str
    fetched_at: str
    analyzed_at: str
    sentiment: float  # in [-1, 1]
    sentiment_label: str  # negative | neutral | positive
    model: str
    time_estimated: bool = False
    schema_version: int = 2
    # --- version 2: the analyses beyond sentiment (defaults keep version-1 messages readable) ---
    confidence: float = 0.0  # of the sentiment label, in [0, 1]
    categories: list[str] = field(default_factory=list)  # at or over the threshold, best first
    category_scores: list[float] = field(default_factory=list)  # same order as ``categories``
    topic_id: int = -1  # -1: not assigned (yet)
    topic_label: str = ""
    story_id: str = ""  # the id of the story's first article ("" when not assigned)

    @classmethod
    def from_news(
        cls,
        item: NewsItem,
        *,
        sentiment: float,
        label: str,
        model: str,
        analyzed_at: datetime | None = None,
        **analyses: Any,
    ) -> ScoredArticle:
        """``analyses``: the version-2 fields (confidence, categories, topic_id, ...)."""
        return cls(
            id=item.id,
            source=item.source,
            url=item.url,
            title=item.title,
            summary=item.summary,
            published_at=item.published_at,
            fetched_at=item.fetched_at,
            analyzed_at=format_time(analyzed_at or utcnow()),
            sentiment=float(sentiment),
            sentiment_label=label,
            model=model,
            time_estimated=item.time_estimated,
            **analyses,
        )

    @property
    def published_ts(self) -> float:
        return to_ts(self.published_at)

    @property
    def text(self) -> str:
        return f"{self.title}. {self.summary}" if self.summary else self.title


@dataclass(frozen=True, slots=True)
class NewsEvent(Record):
    """A burst of volume or sentiment on a topic or keyword (topic ``events``).

    Published when it opens, at each new peak and when it closes, always under the same
    ``id`` (from kind, key and start): readers keep the latest version of each.
    """

    id: str
    kind: str  # volume | sentiment
    key: str  # "topic:12", "kw:etf"
    label: str
    keywords: list[str]
    start: str
    peak: str
    end: str | None  # None while the event is open
    peak_value: float
    baseline: float
    score: float  # the detector's burst score at the peak (robust z)
    examples: list[str]  # article ids
    updated_at: str = field(default_factory=lambda: format_time(utcnow()))
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class WindowAggregate(Record):
    """One time window of the aggregates (topic ``aggregates``); price fields are ``None``
    when the window saw no price."""

    start: str
    step_s: int
    count: int
    sentiment_mean: float | None
    positive: int
    neutral: int
    negative: int
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    schema_version: int = 2
    # --- version 2 ---
    topics: list[int] = field(default_factory=list)  # topic ids seen in the window, largest first
    topic_counts: list[int] = field(default_factory=list)  # articles per topic, same order
    categories: list[str] = field(default_factory=list)
    category_counts: list[int] = field(default_factory=list)
    stories: int = 0  # distinct stories among the window's articles
    events: int = 0  # events that started in the window
    sources: list[str] = field(default_factory=list)  # sources seen in the window, largest first
    source_counts: list[int] = field(default_factory=list)  # articles per source, same order


@dataclass(frozen=True, slots=True)
class DeadLetter(Record):
    """A message that could not be processed (topic ``deadletter``), with the reason."""

    topic: str
    message_id: str
    reason: str
    payload: str  # the original bytes, UTF-8 with replacement, bounded
    redeliveries: int
    failed_at: str = field(default_factory=lambda: format_time(utcnow()))
    schema_version: int = 1

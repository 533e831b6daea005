"""cluster.records: time formatting, untrusted-text cleaning, validated constructors and the
dict round trip of every record type."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cluster.ids import BadURLError, article_id, tick_id
from cluster.records import (
    DeadLetter,
    NewsEvent,
    NewsItem,
    PriceTick,
    Record,
    ScoredArticle,
    WindowAggregate,
    clean_text,
    format_time,
    parse_time,
    to_ts,
)

T0 = datetime(2022, 7, 5, 4, 24, 0, tzinfo=UTC)

# ---------------------------------------------------------------- times


def test_format_time_whole_seconds_and_milliseconds() -> None:
    assert format_time(T0) == "2022-07-05T04:24:00Z"
    assert format_time(T0.replace(microsecond=123456)) == "2022-07-05T04:24:00.123Z"
    assert format_time(T0.replace(microsecond=999)) == "2022-07-05T04:24:00.000Z"


def test_format_time_from_epoch_numbers() -> None:
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(1656995040.0) == "2022-07-05T04:24:00Z"
    assert format_time(1656995040.5) == "2022-07-05T04:24:00.500Z"


def test_format_time_converts_other_zones_to_utc() -> None:
    plus2 = datetime(2022, 7, 5, 6, 24, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(plus2) == "2022-07-05T04:24:00Z"


@pytest.mark.parametrize(
    "text",
    [
        "2022-07-05T04:24:00Z",
        "2022-07-05T04:24:00+00:00",
        "2022-07-05T06:24:00+02:00",
        "2022-07-05T04:24:00",
        " 2022-07-05 04:24:00Z ",
    ],
)
def test_parse_time_variants_are_utc(text: str) -> None:
    dt = parse_time(text)
    assert dt == T0
    assert dt.utcoffset() == timedelta(0)


def test_parse_time_format_time_round_trip() -> None:
    for dt in (T0, T0.replace(microsecond=250000), datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)):
        assert parse_time(format_time(dt)) == dt
    assert to_ts("2022-07-05T04:24:00Z") == 1656995040.0


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_time("yesterday")


# ---------------------------------------------------------------- clean_text


def test_clean_text_none_and_plain() -> None:
    assert clean_text(None, 10) == ""
    assert clean_text("Bitcoin rises", 100) == "Bitcoin rises"


def test_clean_text_drops_script_and_style_with_content() -> None:
    raw = "Before<script type='text/javascript'>alert('x')</script>Mid<STYLE>p{color:red}</Style >After"
    assert clean_text(raw, 100) == "Before Mid After"


def test_clean_text_strips_other_tags_and_folds_space() -> None:
    assert clean_text("<p>Bitcoin <b>hits</b>\n\n <a href='x'>$60k</a></p>", 100) == "Bitcoin hits $60k"


def test_clean_text_decodes_entities_exactly_once() -> None:
    assert clean_text("Tom &amp; Jerry &#8364; &quot;q&quot;", 100) == 'Tom & Jerry € "q"'
    # double-encoded: one decoding only, and the resulting "<" text is not treated as a tag
    assert clean_text("a &amp;lt;b&amp;gt; c", 100) == "a &lt;b&gt; c"
    assert clean_text("a &lt;b&gt; c", 100) == "a <b> c"


def test_clean_text_removes_control_and_bidi_characters() -> None:
    raw = "Bit\x00coin\x07 \u202eevil\u202c \u200bzero\ufeff\u2066iso\u2069 \x85x\x9f"
    assert clean_text(raw, 100) == "Bitcoin evil zeroiso x"


def test_clean_text_literal_escape_sequences_become_space() -> None:
    assert clean_text("Price\\xa0up\\r\\nnow\\tok", 100) == "Price up now ok"


def test_clean_text_tabs_and_newlines_folded() -> None:
    assert clean_text("  a\tb\r\nc  \n", 100) == "a b c"


def test_clean_text_bounds_length_with_ellipsis() -> None:
    assert clean_text("abcdefghij", 10) == "abcdefghij"
    out = clean_text("abcdefghijk", 10)
    assert out == "abcdefghi…"
    assert len(out) == 10
    # no dangling space before the ellipsis
    assert clean_text("abcd efghij", 6) == "abcd…"
    long = clean_text("word " * 10_000, 50)
    assert len(long) <= 50
    assert long.endswith("…")


def test_clean_text_bytes_invalid_utf8_replaced() -> None:
    assert clean_text(b"Bitcoin \xff\xfe up \xe2\x82\xac", 100) == "Bitcoin \ufffd\ufffd up €"


# ---------------------------------------------------------------- NewsItem.create


def _news(**kw: object) -> NewsItem:
    args: dict[str, object] = {
        "source": "coindesk",
        "url": "https://www.coindesk.com/markets/btc?utm_source=rss#x",
        "title": "Bitcoin <b>rises</b>",
        "summary": "<p>Price up &amp; more</p>",
        "published_at": T0,
        "fetched_at": T0 + timedelta(minutes=5),
    }
    args.update(kw)
    return NewsItem.create(**args)  # type: ignore[arg-type]


def test_news_item_create_normalises() -> None:
    item = _news()
    assert item.url == "https://www.coindesk.com/markets/btc"
    assert item.id == article_id(url="https://www.coindesk.com/markets/btc")
    assert item.title == "Bitcoin rises"
    assert item.summary == "Price up & more"
    assert item.published_at == "2022-07-05T04:24:00Z"
    assert item.fetched_at == "2022-07-05T04:29:00Z"
    assert item.time_estimated is False
    assert item.schema_version == 1
    assert item.published_ts == 1656995040.0
    assert item.text == "Bitcoin rises. Price up & more"


def test_news_item_text_without_summary_is_title() -> None:
    item = _news(summary=None)
    assert item.summary == ""
    assert item.text == "Bitcoin rises"


def test_news_item_missing_time_is_estimated() -> None:
    item = _news(published_at=None)
    assert item.time_estimated is True
    assert item.published_at == item.fetched_at == "2022-07-05T04:29:00Z"


def test_news_item_future_beyond_skew_is_estimated() -> None:
    fetched = T0
    item = _news(published_at=fetched + timedelta(seconds=301), fetched_at=fetched, max_future_skew_s=300)
    assert item.time_estimated is True
    assert item.published_at == item.fetched_at == "2022-07-05T04:24:00Z"


def test_news_item_future_within_skew_is_kept() -> None:
    item = _news(published_at=T0 + timedelta(seconds=300), fetched_at=T0, max_future_skew_s=300)
    assert item.time_estimated is False
    assert item.published_at == "2022-07-05T04:29:00Z"


def test_news_item_fetched_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    item = NewsItem.create(source="s", url="https://example.com/a", title="t", published_at=None)
    after = datetime.now(UTC)
    assert before <= parse_time(item.fetched_at) <= after
    assert item.time_estimated is True


@pytest.mark.parametrize("title", ["", "   ", "<b></b>", "<script>x</script>", "\u200b\u202e", b""])
def test_news_item_empty_title_rejected(title: str | bytes) -> None:
    with pytest.raises(ValueError, match="empty title"):
        _news(title=title)


def test_news_item_bad_url_rejected() -> None:
    with pytest.raises(BadURLError):
        _news(url="http://localhost/a")


def test_news_item_without_url_uses_guid() -> None:
    item = _news(url="", guid="reddit:t3_abc")
    assert item.url == ""
    assert item.id == article_id(guid="reddit:t3_abc")
    with pytest.raises(BadURLError):
        _news(url="", guid=None)


def test_news_item_limits_and_source_fallback() -> None:
    item = _news(title="T" * 50, summary="S" * 50, source="  ", max_title_chars=10, max_summary_chars=20)
    assert item.title == "T" * 9 + "…"
    assert item.summary == "S" * 19 + "…"
    assert item.source == "unknown"
    assert _news(source="x" * 100).source == "x" * 63 + "…"


def test_news_item_bytes_title_with_invalid_utf8() -> None:
    assert _news(title=b"Bitcoin \xff rally").title == "Bitcoin \ufffd rally"


def test_news_item_same_link_same_id() -> None:
    a = _news(url="https://example.com/a?utm_source=x")
    b = _news(url="https://EXAMPLE.com/a#frag", title="Other title", published_at=None)
    assert a.id == b.id


# ---------------------------------------------------------------- PriceTick.create


def _tick(**kw: object) -> PriceTick:
    args: dict[str, object] = {
        "source": "bitstamp",
        "symbol": "BTCUSD",
        "ts": T0,
        "open": 20000,
        "high": 20500,
        "low": 19800,
        "close": 20100,
        "volume": 12,
        "interval_s": 3600,
    }
    args.update(kw)
    return PriceTick.create(**args)  # type: ignore[arg-type]


def test_price_tick_create() -> None:
    t = _tick()
    assert t.id == tick_id("bitstamp", "BTCUSD", T0.timestamp(), "")
    assert t.ts == "2022-07-05T04:24:00Z"
    assert t.ts_epoch == 1656995040.0
    assert (t.open, t.high, t.low, t.close, t.volume, t.interval_s) == (
        20000.0,
        20500.0,
        19800.0,
        20100.0,
        12.0,
        3600,
    )
    assert isinstance(t.open, float)
    assert isinstance(t.volume, float)
    assert _tick(seq="trade-9").id == tick_id("bitstamp", "BTCUSD", T0.timestamp(), "trade-9")
    assert _tick(seq="trade-9").id != t.id


def test_price_tick_trade_with_equal_prices_is_valid() -> None:
    t = _tick(open=1.5, high=1.5, low=1.5, close=1.5, interval_s=0)
    assert t.high == t.low == 1.5


@pytest.mark.parametrize(
    "bad",
    [
        {"high": 19000, "low": 19800},
        {"open": 0},
        {"close": -1},
        {"low": 0.0},
        {"high": math.nan},
        {"open": math.inf},
        {"high": 1e9},
        {"open": -20000, "high": -19000, "low": -21000, "close": -20000},
    ],
)
def test_price_tick_rejects_implausible(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="implausible"):
        _tick(**bad)


# ---------------------------------------------------------------- ScoredArticle.from_news


def test_scored_article_from_news_copies_item() -> None:
    item = _news(published_at=None)
    analyzed = T0 + timedelta(hours=1, microseconds=5000)
    s = ScoredArticle.from_news(item, sentiment=0.25, label="positive", model="m", analyzed_at=analyzed)
    for name in ("id", "source", "url", "title", "summary", "published_at", "fetched_at", "time_estimated"):
        assert getattr(s, name) == getattr(item, name), name
    assert s.time_estimated is True
    assert s.analyzed_at == "2022-07-05T05:24:00.005Z"
    assert s.sentiment == 0.25
    assert isinstance(s.sentiment, float)
    assert s.sentiment_label == "positive"
    assert s.model == "m"
    assert s.published_ts == item.published_ts


def test_scored_article_analyzed_at_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    s = ScoredArticle.from_news(_news(), sentiment=0, label="neutral", model="m")
    assert before <= parse_time(s.analyzed_at) <= datetime.now(UTC)


# ---------------------------------------------------------------- dict round trip


def _records() -> list[Record]:
    item = _news()
    return [
        item,
        _tick(),
        ScoredArticle.from_news(item, sentiment=-0.5, label="negative", model="m", analyzed_at=T0),
        WindowAggregate(
            start="2022-07-05T04:00:00Z",
            step_s=3600,
            count=2,
            sentiment_mean=None,
            positive=0,
            neutral=2,
            negative=0,
        ),
        WindowAggregate(
            start="2022-07-05T04:00:00Z",
            step_s=60,
            count=1,
            sentiment_mean=0.1,
            positive=1,
            neutral=0,
            negative=0,
            open=1.0,
            high=2.0,
            low=0.5,
            close=1.5,
        ),
        DeadLetter(
            topic="t",
            message_id="(1,2,-1,0)",
            reason="bad",
            payload="{",
            redeliveries=3,
            failed_at="2022-01-01T00:00:00Z",
        ),
    ]


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_to_dict_from_dict_round_trip(record: Record) -> None:
    data = record.to_dict()
    assert data["schema_version"] == type(record).__dataclass_fields__["schema_version"].default
    assert type(record).from_dict(data) == record
    assert type(record).from_dict({**data, "added_in_v9": [1, 2], "other": None}) == record


def _scored_v2() -> ScoredArticle:
    return ScoredArticle.from_news(
        _news(),
        sentiment=0.4,
        label="positive",
        model="m",
        confidence=0.8,
        categories=["etf_institutional", "regulation"],
        category_scores=[0.9, 0.6],
        topic_id=3,
        topic_label="etf approval sec",
        story_id="abc",
    )


def test_scored_article_v2_fields_round_trip() -> None:
    article = _scored_v2()
    assert ScoredArticle.from_dict(article.to_dict()) == article
    assert article.categories == ["etf_institutional", "regulation"]


def test_version_1_scored_article_still_decodes_with_defaults() -> None:
    data = _scored_v2().to_dict()
    for name in ("confidence", "categories", "category_scores", "topic_id", "topic_label", "story_id"):
        del data[name]
    data["schema_version"] = 1
    old = ScoredArticle.from_dict(data)
    assert (old.categories, old.topic_id, old.story_id, old.confidence) == ([], -1, "", 0.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("categories", "regulation", "expected list"),
        ("categories", ["ok", 3], r"categories\[1\]: expected str"),
        ("category_scores", [0.5, True], r"category_scores\[1\]: expected float"),
        ("topic_id", 2.5, "expected int"),
    ],
)
def test_list_and_new_fields_are_type_checked(field: str, value: object, message: str) -> None:
    data = {**_scored_v2().to_dict(), field: value}
    with pytest.raises(TypeError, match=message):
        ScoredArticle.from_dict(data)


def test_news_event_round_trip_and_time_checks() -> None:
    event = NewsEvent(
        id="e1",
        kind="volume",
        key="topic:3",
        label="luna terra collapse",
        keywords=["luna", "terra"],
        start="2022-05-09T00:00:00Z",
        peak="2022-05-10T12:00:00Z",
        end=None,
        peak_value=42.0,
        baseline=3.0,
        score=12.5,
        examples=["a", "b"],
    )
    assert NewsEvent.from_dict(event.to_dict()) == event
    with pytest.raises(ValueError, match="peak: not an ISO-8601 time"):
        NewsEvent.from_dict({**event.to_dict(), "peak": "yesterday"})


def test_to_dict_has_exact_fields() -> None:
    assert list(_tick().to_dict()) == [
        "id",
        "source",
        "symbol",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "interval_s",
        "schema_version",
    ]


def test_from_dict_missing_required_field_raises_type_error() -> None:
    data = _news().to_dict()
    del data["title"]
    with pytest.raises(TypeError):
        NewsItem.from_dict(data)


def test_from_dict_applies_defaults() -> None:
    data = _news().to_dict()
    del data["time_estimated"]
    del data["schema_version"]
    item = NewsItem.from_dict(data)
    assert item.time_estimated is False
    assert item.schema_version == 1


def test_records_are_frozen() -> None:
    item = _news()
    with pytest.raises(AttributeError):
        item.title = "changed"  # type: ignore[misc]


def test_dead_letter_failed_at_defaults_to_now() -> None:
    d = DeadLetter(topic="t", message_id="m", reason="r", payload="p", redeliveries=0)
    assert abs(parse_time(d.failed_at) - datetime.now(UTC)) < timedelta(seconds=5)


def test_bounded_cuts_oversized_texts_of_foreign_messages() -> None:
    from cluster.records import MAX_URL_CHARS

    item = NewsItem.create(
        source="s",
        url="https://example.com/a",
        title="Bitcoin",
        published_at=datetime(2022, 1, 1, tzinfo=UTC),
    )
    assert item.bounded() is item
    huge = dataclasses.replace(item, title="Bitcoin " * 500_000, summary="x" * 3_000_000, source="s" * 1000)
    cut = huge.bounded(max_title_chars=500, max_summary_chars=2000)
    assert len(cut.title) <= 500 and len(cut.summary) <= 2000 and len(cut.source) <= 64
    assert cut.title.startswith("Bitcoin Bitcoin") and cut.id == item.id
    with pytest.raises(ValueError, match="url"):
        dataclasses.replace(item, url="https://example.com/" + "a" * MAX_URL_CHARS).bounded()

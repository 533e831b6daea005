"""cluster.aggregates: step parsing, idempotent writes by id, and windows (epoch-aligned,
every bucket present, sentiment counts, OHLC) computed from a real SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cluster.aggregates import MAX_BUCKETS, AggregatesStore, Totals, parse_step
from cluster.records import NewsEvent, NewsItem, PriceTick, ScoredArticle, format_time

H0 = datetime(2022, 7, 5, 0, 0, tzinfo=UTC)  # an hour boundary (and a day boundary)
H0_TS = H0.timestamp()

# ---------------------------------------------------------------- parse_step


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m", 60),
        ("15m", 900),
        ("1h", 3600),
        ("6h", 21600),
        ("1d", 86400),
        ("31d", 31 * 86400),
        ("60s", 60),
        (" 5m ", 300),
    ],
)
def test_parse_step_accepts(text: str, seconds: int) -> None:
    assert parse_step(text) == seconds


@pytest.mark.parametrize(
    "text", ["30s", "59s", "0m", "0d", "7x", "40d", "32d", "", "m", "1", "1.5h", "-1m", "1M", "1 h x"]
)
def test_parse_step_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_step(text)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AggregatesStore]:
    s = AggregatesStore(tmp_path / "nested" / "aggregates.sqlite")
    yield s
    s.close()


def _article(n: int, at: datetime, sentiment: float, label: str, source: str = "coindesk") -> ScoredArticle:
    item = NewsItem.create(
        source=source,
        url=f"https://example.com/news/{n}",
        title=f"headline {n}",
        published_at=at,
        fetched_at=at,
    )
    return ScoredArticle.from_news(item, sentiment=sentiment, label=label, model="m", analyzed_at=at)


def _tick(at: datetime, o: float, h: float, lo: float, c: float) -> PriceTick:
    return PriceTick.create(source="bitstamp", symbol="BTCUSD", ts=at, open=o, high=h, low=lo, close=c)


def _m(minutes: float) -> datetime:
    return H0 + timedelta(minutes=minutes)


# ---------------------------------------------------------------- writes


def test_add_articles_returns_new_times_and_is_idempotent(store: AggregatesStore) -> None:
    arts = [_article(1, _m(5), 0.5, "positive"), _article(2, _m(70), -0.5, "negative")]
    assert store.add_articles(arts) == [_m(5).timestamp(), _m(70).timestamp()]
    before = store.series(H0_TS, H0_TS + 3 * 3600, 3600)
    assert store.add_articles(arts) == []
    assert store.add_articles(list(reversed(arts))) == []
    assert store.series(H0_TS, H0_TS + 3 * 3600, 3600) == before
    assert store.totals().articles == 2


def test_add_articles_partially_new(store: AggregatesStore) -> None:
    a, b = _article(1, _m(1), 0.0, "neutral"), _article(2, _m(2), 0.0, "neutral")
    assert store.add_articles([a]) == [_m(1).timestamp()]
    assert store.add_articles([a, b]) == [_m(2).timestamp()]


def test_add_prices_idempotent(store: AggregatesStore) -> None:
    ticks = [_tick(_m(1), 100, 110, 90, 105), _tick(_m(2), 105, 106, 104, 105)]
    assert store.add_prices(ticks) == [_m(1).timestamp(), _m(2).timestamp()]
    assert store.add_prices(ticks) == []
    assert store.totals().prices == 2


def test_empty_inputs(store: AggregatesStore) -> None:
    assert store.add_articles([]) == []
    assert store.add_prices(iter([])) == []


def test_same_link_different_analysis_counts_once(store: AggregatesStore) -> None:
    # a redelivered article re-analysed later still has the same id
    assert len(store.add_articles([_article(1, _m(1), 0.9, "positive")])) == 1
    assert store.add_articles([_article(1, _m(1), -0.9, "negative")]) == []
    (w,) = store.series(_m(1).timestamp(), _m(2).timestamp(), 60)
    assert (w.count, w.sentiment_mean, w.positive, w.negative) == (1, pytest.approx(0.9), 1, 0)


# ---------------------------------------------------------------- series


def test_three_hour_series_with_empty_bucket(store: AggregatesStore) -> None:
    store.add_articles(
        [
            _article(1, _m(0), 0.6, "positive"),  # exactly on the first boundary
            _article(2, _m(30), -0.2, "neutral"),
            _article(3, _m(59.99), -0.7, "negative"),
            _article(4, _m(120), 0.4, "positive"),  # exactly on the third boundary
        ]
    )
    store.add_prices([_tick(_m(10), 100, 120, 95, 110), _tick(_m(50), 110, 115, 90, 112)])
    windows = store.series(H0_TS, H0_TS + 3 * 3600, 3600)
    assert [w.start for w in windows] == [
        "2022-07-05T00:00:00Z",
        "2022-07-05T01:00:00Z",
        "2022-07-05T02:00:00Z",
    ]
    assert all(w.step_s == 3600 for w in windows)
    first, empty, third = windows

    assert (first.count, first.positive, first.neutral, first.negative) == (3, 1, 1, 1)
    assert first.sentiment_mean == pytest.approx((0.6 - 0.2 - 0.7) / 3)
    assert first.open == 100.0
    assert first.high == 120.0
    assert first.low == 90.0

    assert (empty.count, empty.positive, empty.neutral, empty.negative) == (0, 0, 0, 0)
    assert empty.sentiment_mean is None
    assert (empty.open, empty.high, empty.low, empty.close) == (None, None, None, None)

    assert (third.count, third.positive, third.sentiment_mean) == (1, 1, pytest.approx(0.4))
    assert (third.open, third.close) == (None, None)


def test_open_is_first_by_time_not_by_insertion(store: AggregatesStore) -> None:
    store.add_prices([_tick(_m(40), 300, 300, 300, 300)])
    store.add_prices([_tick(_m(5), 100, 100, 100, 100)])
    store.add_prices([_tick(_m(20), 200, 200, 200, 200)])
    (w,) = store.series(H0_TS, H0_TS + 3600, 3600)
    assert (w.open, w.high, w.low) == (100.0, 300.0, 100.0)


def test_close_is_last_by_time_when_extremes_coincide(store: AggregatesStore) -> None:
    # the last tick also holds the highest high and the lowest low, so every MIN/MAX row is the same one
    store.add_prices([_tick(_m(45), 150, 150, 80, 85), _tick(_m(5), 100, 100, 100, 100)])
    (w,) = store.series(H0_TS, H0_TS + 3600, 3600)
    assert (w.open, w.high, w.low, w.close) == (100.0, 150.0, 80.0, 85.0)


def test_close_is_last_by_time_when_low_is_earlier(store: AggregatesStore) -> None:
    store.add_prices(
        [
            _tick(_m(1), 100, 110, 90, 105),  # lowest low
            _tick(_m(30), 105, 120, 100, 115),  # highest high
            _tick(_m(50), 115, 118, 95, 111),  # last: its close is the window's close
        ]
    )
    (w,) = store.series(H0_TS, H0_TS + 3600, 3600)
    assert (w.open, w.high, w.low) == (100.0, 120.0, 90.0)
    assert w.close == 111.0


def test_buckets_aligned_to_epoch_multiples(store: AggregatesStore) -> None:
    store.add_articles([_article(1, _m(14), 0.0, "neutral"), _article(2, _m(16), 0.0, "neutral")])
    start = H0_TS + 7 * 60 + 13.5  # not aligned
    end = start + 30 * 60
    windows = store.series(start, end, 900)
    assert [w.start for w in windows] == [format_time(H0_TS + k * 900) for k in range(3)]
    assert [w.count for w in windows] == [1, 1, 0]
    # the same bucket has the same bounds whatever the query's start
    again = store.series(H0_TS + 900 - 1, H0_TS + 1800, 900)
    assert [w.start for w in again] == [format_time(H0_TS), format_time(H0_TS + 900)]
    assert [w.count for w in again] == [1, 1]


def test_day_buckets_align_to_utc_midnight(store: AggregatesStore) -> None:
    store.add_articles([_article(1, H0 + timedelta(hours=23, minutes=59), 0.0, "neutral")])
    windows = store.series(H0_TS + 5 * 3600, H0_TS + 2 * 86400, 86400)
    assert [w.start for w in windows] == ["2022-07-05T00:00:00Z", "2022-07-06T00:00:00Z"]
    assert [w.count for w in windows] == [1, 0]


def test_end_is_exclusive(store: AggregatesStore) -> None:
    store.add_articles([_article(1, _m(60), 0.0, "neutral")])
    store.add_prices([_tick(_m(60), 1, 1, 1, 1)])
    (w,) = store.series(H0_TS, H0_TS + 3600, 3600)
    assert w.count == 0
    assert w.open is None
    w1, w2 = store.series(H0_TS, H0_TS + 3601, 3600)
    assert (w1.count, w2.count) == (0, 1)
    assert w2.open == 1.0


def test_minute_windows_for_one_minute(store: AggregatesStore) -> None:
    store.add_articles([_article(1, _m(3.5), 0.3, "positive")])
    (w,) = store.series(_m(3).timestamp(), _m(4).timestamp(), 60)
    assert w.start == "2022-07-05T00:03:00Z"
    assert (w.count, w.positive) == (1, 1)


def test_series_bad_bounds(store: AggregatesStore) -> None:
    with pytest.raises(ValueError, match="end must be after start"):
        store.series(H0_TS, H0_TS, 60)
    with pytest.raises(ValueError):
        store.series(H0_TS + 10, H0_TS, 60)


def test_max_buckets(store: AggregatesStore) -> None:
    assert len(store.series(H0_TS, H0_TS + MAX_BUCKETS * 60, 60)) == MAX_BUCKETS
    with pytest.raises(ValueError, match="buckets requested"):
        store.series(H0_TS, H0_TS + MAX_BUCKETS * 60 + 1, 60)


# ---------------------------------------------------------------- totals and durability


def test_totals(store: AggregatesStore) -> None:
    assert store.totals() == Totals(0, 0, None, None)
    store.add_prices([_tick(_m(30), 1, 1, 1, 1)])
    assert store.totals() == Totals(0, 1, _m(30).timestamp(), _m(30).timestamp())
    store.add_articles([_article(1, _m(10), 0, "neutral"), _article(2, _m(90), 0, "neutral")])
    assert store.totals() == Totals(2, 1, _m(10).timestamp(), _m(90).timestamp())


def test_rows_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "agg.sqlite"
    s = AggregatesStore(path)
    s.add_articles([_article(1, _m(1), 0.2, "positive")])
    s.add_prices([_tick(_m(2), 5, 6, 4, 5.5)])
    s.close()
    s2 = AggregatesStore(path)
    try:
        assert s2.totals() == Totals(1, 1, _m(1).timestamp(), _m(2).timestamp())
        assert s2.add_articles([_article(1, _m(1), 0.2, "positive")]) == []
    finally:
        s2.close()


# ---------------------------------------------------------------- analyses (schema version 2)


def _analysed(n: int, at: datetime, *, topic: int, story: str, cats: list[str]) -> ScoredArticle:
    return dataclasses.replace(
        _article(n, at, 0.1, "positive"),
        topic_id=topic,
        topic_label=f"topic {topic}",
        story_id=story,
        categories=cats,
        category_scores=[0.9] * len(cats),
    )


def test_windows_carry_topic_shares_categories_and_stories(store: AggregatesStore) -> None:
    arts = [
        _analysed(1, _m(1), topic=3, story="s1", cats=["etf_institutional", "regulation"]),
        _analysed(2, _m(2), topic=3, story="s1", cats=["etf_institutional"]),
        _analysed(3, _m(3), topic=5, story="s2", cats=[]),
        _analysed(4, _m(4), topic=-1, story="", cats=["mining_energy"]),
        _analysed(5, _m(65), topic=5, story="s3", cats=["mining_energy"]),
    ]
    assert [a.id for a in store.add_new_articles(arts)] == [a.id for a in arts]
    assert store.add_new_articles(arts) == []  # a redelivery adds nothing, categories included
    first, second = store.series(H0_TS, H0_TS + 7200, 3600)
    assert (first.topics, first.topic_counts) == ([3, 5], [2, 1])  # unassigned (-1) left out
    assert (first.categories, first.category_counts) == (
        ["etf_institutional", "mining_energy", "regulation"],
        [2, 1, 1],
    )
    assert first.stories == 3  # s1, s2, and the article without a story counts as its own
    assert (second.topics, second.categories, second.stories) == ([5], ["mining_energy"], 1)


def test_windows_count_articles_per_source(store: AggregatesStore) -> None:
    store.add_articles(
        [
            _article(1, _m(1), 0.1, "positive", source="decrypt"),
            _article(2, _m(2), 0.1, "positive", source="coindesk"),
            _article(3, _m(3), 0.1, "positive", source="coindesk"),
            _article(4, _m(70), 0.1, "positive", source="decrypt"),
        ]
    )
    first, second = store.series(H0_TS, H0_TS + 7200, 3600)
    assert (first.sources, first.source_counts) == (["coindesk", "decrypt"], [2, 1])  # largest first
    assert (second.sources, second.source_counts) == (["decrypt"], [1])
    assert sum(first.source_counts) == first.count


def _event(eid: str, start: datetime, end: datetime | None, score: float) -> NewsEvent:
    return NewsEvent(
        id=eid,
        kind="volume",
        key="topic:1",
        label="l",
        keywords=["k"],
        start=format_time(start),
        peak=format_time(start),
        end=format_time(end) if end else None,
        peak_value=10.0,
        baseline=1.0,
        score=score,
        examples=[],
    )


def test_events_upsert_keeps_latest_version_and_overlap_query(store: AggregatesStore) -> None:
    store.upsert_events([_event("a", _m(0), None, 5.0), _event("b", _m(200), _m(260), 9.0)])
    store.upsert_events([_event("a", _m(0), _m(90), 7.0)])  # closed, new peak score
    got = store.events(H0_TS, H0_TS + 5 * 3600, 10)
    assert [(e.id, e.score) for e in got] == [("b", 9.0), ("a", 7.0)]
    assert [e.id for e in store.events(_m(100).timestamp(), _m(150).timestamp(), 10)] == []
    assert [e.id for e in store.events(_m(80).timestamp(), _m(100).timestamp(), 10)] == ["a"]
    assert store.series(H0_TS, H0_TS + 4 * 3600, 3600)[0].events == 1


def test_an_older_file_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE articles (id TEXT PRIMARY KEY, ts REAL, sentiment REAL, label TEXT, source TEXT)"
    )
    db.execute("INSERT INTO articles VALUES ('x', ?, 0.5, 'positive', 'old')", (H0_TS,))
    db.commit()
    db.close()
    s = AggregatesStore(path)
    s.add_new_articles([_analysed(1, _m(1), topic=2, story="s", cats=["technology"])])
    window = s.series(H0_TS, H0_TS + 3600, 3600)[0]
    assert (window.count, window.topics, window.stories) == (2, [2], 2)
    assert [row[2] for row in s.articles_since(H0_TS)] == [-1, 2]
    s.close()

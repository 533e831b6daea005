"""actors.replay: the real recorded files (skipped when ../shared/data is absent), JSONL and CSV
edge cases in temporary files, merging/clipping, and ReplayClock with a fake clock."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors.replay import (
    ReplayClock,
    ReplayFormat,
    ReplayReport,
    ReplayRow,
    clip,
    detect_format,
    merge_by_time,
    news_span,
    read_file,
)
from cluster.records import NewsItem, PriceTick

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NEWS_CSV = DATA / "crypto_news_2021_2022" / "cryptonews.csv"
REDDIT_CSV = DATA / "reddit_r_bitcoin_2021_2022" / "r_bitcoin_selfposts_2021-10-12_2022-07-05.csv"
BITSTAMP_CSV = DATA / "btc_usd_bitstamp_hourly" / "Bitstamp_BTCUSD_1h.csv"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data file {path.name} not found under <repo>/../shared/data")
    return path


def _read(path: Path, fmt: ReplayFormat | None = None) -> tuple[list[ReplayRow], ReplayReport]:
    report = ReplayReport()
    return list(read_file(path, fmt, report=report)), report


@pytest.fixture(scope="module")
def news() -> tuple[list[ReplayRow], ReplayReport]:
    return _read(_need(NEWS_CSV))


@pytest.fixture(scope="module")
def prices() -> tuple[list[ReplayRow], ReplayReport]:
    return _read(_need(BITSTAMP_CSV))


# --- the real files ---------------------------------------------------------------------------


def test_detect_real_formats() -> None:
    assert detect_format(_need(NEWS_CSV)) is ReplayFormat.CRYPTONEWS
    assert detect_format(_need(REDDIT_CSV)) is ReplayFormat.REDDIT
    assert detect_format(_need(BITSTAMP_CSV)) is ReplayFormat.BITSTAMP


def test_news_csv_counts(news: tuple[list[ReplayRow], ReplayReport]) -> None:
    rows, report = news
    assert report.read == 7524
    # 60 rows have no URL (PROVENANCE counts them as "59 repeated URLs"); 28 of them also lack a title.
    assert report.bad == {"empty title": 28, "bad url": 32}
    assert report.ok == len(rows) == 7524 - 60
    assert report.repaired["doubled url prefix"] == 61
    assert report.estimated == 0
    assert "7524 read" in report.summary() and "empty title 28" in report.summary()
    assert all("comhttp" not in r.record.url for r in rows if isinstance(r.record, NewsItem))
    assert all(ex.file == "cryptonews.csv" and ex.line > 1 for ex in report.examples)
    assert 0 < len(report.examples) <= 20


def test_news_csv_order_and_times(news: tuple[list[ReplayRow], ReplayReport]) -> None:
    rows, _ = news
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(rows))
    assert rows[0].ts == _ts("2021-10-12 20:00")
    assert rows[-1].ts == _ts("2022-07-05 04:24")
    first = rows[0].record
    assert isinstance(first, NewsItem)
    assert first.published_at == first.fetched_at == "2021-10-12T20:00:00Z"
    assert not first.time_estimated
    assert {r.record.source for r in rows} == {"CoinTelegraph", "CryptoNews", "CryptoPotato"}


def test_news_ids_deterministic(news: tuple[list[ReplayRow], ReplayReport]) -> None:
    rows, _ = news
    again, _ = _read(NEWS_CSV)
    assert [r.record.id for r in rows] == [r.record.id for r in again]
    # A repaired URL names the same article as its clean spelling, tracking parameters included.
    repaired = next(
        r.record for r in rows if isinstance(r.record, NewsItem) and "/explained/" in r.record.url
    )
    twin = NewsItem.create(source="x", url=repaired.url + "?utm_source=feed", title="t", published_at=None)
    assert twin.id == repaired.id


def test_reddit_csv() -> None:
    rows, report = _read(_need(REDDIT_CSV))
    assert report.read == 12775
    assert report.ok == len(rows) == 12775 and report.bad == {}
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(rows))
    assert rows[0].ts == _ts("2021-10-12 00:18:29")
    assert rows[-1].ts == _ts("2022-07-05 22:59:28")
    items = [r.record for r in rows if isinstance(r.record, NewsItem)]
    assert len(items) == 12775 and all(i.source == "reddit/r/Bitcoin" for i in items)
    assert all(i.url.startswith("https://www.reddit.com/r/Bitcoin/comments/") for i in items)
    assert len({i.id for i in items}) == 12775


def test_bitstamp_csv(prices: tuple[list[ReplayRow], ReplayReport]) -> None:
    rows, report = prices
    assert report.read == report.ok == len(rows) == 37387 and report.bad == {}
    assert all(b.ts - a.ts == 3600 for a, b in itertools.pairwise(rows))
    assert rows[0].ts == _ts("2018-05-15 06:00")
    ticks = [r.record for r in rows]
    assert all(isinstance(t, PriceTick) for t in ticks)
    first = ticks[0]
    assert isinstance(first, PriceTick)
    assert (first.source, first.symbol, first.interval_s) == ("bitstamp", "BTC-USD", 3600)
    assert first.ts == "2018-05-15T06:00:00Z" and first.close == 8740.99
    # That bar's volume columns are swapped in the file (4906603.14 "BTC", 559.93 "USD").
    assert first.volume == 559.93
    assert report.repaired["swapped volumes"] > 0


def test_news_span_and_clip(prices: tuple[list[ReplayRow], ReplayReport]) -> None:
    span = news_span([_need(NEWS_CSV)])
    assert span == (_ts("2021-10-12 20:00"), _ts("2022-07-05 04:24"))
    window = list(clip(prices[0], span[0], span[1]))
    # PROVENANCE: 6,369 hourly bars from 2021-10-12 20:00 to 2022-07-05 04:00.
    assert len(window) == 6369
    assert window[0].ts == span[0] and window[-1].ts == _ts("2022-07-05 04:00")


# --- JSONL and CSV edge cases -----------------------------------------------------------------


def _jsonl(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _obj(**kw: object) -> bytes:
    return json.dumps(kw).encode()


def test_jsonl_counts_and_reasons(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        [
            _obj(
                published_at="2022-01-01T00:00:00Z",
                source="s",
                url="https://example.com/a?utm_source=x",
                title="A",
            ),
            _obj(source="s", url="https://example.com/b", title="B, no date"),
            _obj(
                published_at="2999-01-01T00:00:00Z", source="s", url="https://example.com/c", title="C future"
            ),
            _obj(published_at="2022-01-01T01:00:00Z", source="s", url="not a url", title="D"),
            _obj(
                published_at="2022-01-02T00:00:00+00:00",
                source="s",
                url="https://example.com/e",
                title="<script>alert(1)</script>Bitcoin <b>up</b>",
                summary="<p>fine &amp; dandy</p>",
            ),
            b'{"published_at": "2022-01-01T02:00:00Z", "url": "https://example.com/f", "title": "\xff\xfe"}',
            b"this is not json",
            b"   ",
            _obj(
                published_at="2021-12-31T23:00:00Z", source="s", url="https://EXAMPLE.com/a", title="A again"
            ),
            b"[1, 2]",
            _obj(published_at="yesterday", source="s", url="https://example.com/g", title="G"),
            _obj(published_at="2022-01-01T03:00:00Z", source="s", url="https://example.com/h", title=5),
            _obj(published_at="2022-01-01T04:00:00Z", source="s", url="https://example.com/i", title="  "),
            _obj(published_at="2022-01-03T00:00:00Z", source="s", guid="feed-guid-1", title="guid only"),
        ],
    )
    assert detect_format(path) is ReplayFormat.JSONL
    report = ReplayReport()
    rows = list(read_file(path, report=report))
    assert report.read == 13  # the blank line is not a row
    assert report.bad == {
        "bad url": 1,
        "not utf-8": 1,
        "bad json": 2,
        "bad date": 1,
        "bad field": 1,
        "empty title": 1,
    }
    assert report.ok == len(rows) == 6
    assert (report.estimated, report.duplicates, report.repaired) == (2, 1, {})
    assert {(ex.line, ex.reason) for ex in report.examples} == {
        (4, "bad url"),
        (6, "not utf-8"),
        (7, "bad json"),
        (10, "bad json"),
        (11, "bad date"),
        (12, "bad field"),
        (13, "empty title"),
    }
    # Undated and future-dated items are replayed where they stand (after line 1), not at the end.
    assert [r.line for r in rows] == [9, 1, 2, 3, 5, 14]
    assert rows[1].ts == rows[2].ts == rows[3].ts == _ts("2022-01-01 00:00")
    by_line = {r.line: r.record for r in rows}
    assert all(isinstance(i, NewsItem) for i in by_line.values())
    assert by_line[9].id == by_line[1].id  # same article, spelled differently
    for line in (2, 3):
        item = by_line[line]
        assert isinstance(item, NewsItem) and item.time_estimated
        assert item.published_at == item.fetched_at
    html_item = by_line[5]
    assert isinstance(html_item, NewsItem)
    assert html_item.title == "Bitcoin up" and "<" not in html_item.title
    assert html_item.summary == "fine & dandy"
    guid_item = by_line[14]
    assert isinstance(guid_item, NewsItem) and guid_item.url == "" and guid_item.id


def test_csv_bad_rows_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_bytes(
        b"date;sentiment;source;subject;text;title;url\n"
        b"2-1-2022 10:00;{};CoinTelegraph;bitcoin;later;Later;https://a.example.com/later\n"
        b"1-1-2022 09:05;{};CoinTelegraph;bitcoin;ok;Earlier;https://a.example.com/early\n"
        b"31-2-2022 10:00;{};CoinTelegraph;bitcoin;x;Bad day;https://a.example.com/x\n"
        b"2022-01-01;{};CoinTelegraph;bitcoin;x;ISO date;https://a.example.com/y\n"
        b"1-1-2022 10:00;{};CryptoNews;bitcoin;caf\xe9;Latin-1;https://a.example.com/z\n"
        b"1-1-2022 10:00;{};too;few;fields\n"
        b"\n"
        b'1-1-2022 11:00;{};CryptoNews;bitcoin;"two\nlines";Quoted;https://a.example.com/q\n'
    )
    assert detect_format(path) is ReplayFormat.CRYPTONEWS
    rows, report = _read(path)
    assert report.read == 7
    assert report.bad == {"bad date": 2, "not utf-8": 1, "bad row": 1}
    assert [r.line for r in rows] == [3, 9, 2]
    quoted = rows[1].record
    assert isinstance(quoted, NewsItem) and quoted.summary == "two lines"


def test_unknown_format_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "mystery.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"mystery\.csv"):
        detect_format(path)
    with pytest.raises(ValueError, match=r"mystery\.csv"):
        read_file(path, report=ReplayReport())
    with pytest.raises(OSError):
        read_file(tmp_path / "absent.jsonl", report=ReplayReport())


def test_merge_and_clip() -> None:
    def rows(*ts: float) -> list[ReplayRow]:
        return [
            ReplayRow(
                t, i, NewsItem.create(source="s", url=f"https://x.org/{t}", title="t", published_at=None)
            )
            for i, t in enumerate(ts)
        ]

    merged = list(merge_by_time(rows(1, 4, 6), rows(2, 4, 9), rows()))
    assert [r.ts for r in merged] == [1, 2, 4, 4, 6, 9]
    assert [r.ts for r in clip(merged, 2, 9)] == [2, 4, 4, 6]
    assert [r.ts for r in clip(merged, None, None)] == [1, 2, 4, 4, 6, 9]
    assert [r.ts for r in clip(merged, 5, None)] == [6, 9]


# --- ReplayClock ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds


def test_clock_speed_60() -> None:
    fake = FakeClock()
    clock = ReplayClock(60, first_ts=1000.0, now=fake.now, sleep=fake.sleep, max_sleep_s=5.0)
    assert clock.wait_for(1000.0) and fake.sleeps == []
    assert clock.wait_for(1600.0)  # 600 s of event time at 60x: 10 s of wall time
    assert sum(fake.sleeps) == pytest.approx(10.0) and max(fake.sleeps) <= 5.0
    fake.sleeps.clear()
    assert clock.wait_for(1300.0) and fake.sleeps == []  # already due: no (negative) sleep
    fake.t += 2.0  # the consumer was slow; the next wait only covers what is left
    assert clock.wait_for(1900.0)
    assert sum(fake.sleeps) == pytest.approx(3.0)


def test_clock_speed_0_never_sleeps() -> None:
    fake = FakeClock()
    clock = ReplayClock(0, first_ts=0.0, now=fake.now, sleep=fake.sleep)
    assert all(clock.wait_for(ts) for ts in (0.0, 3600.0, 1e9))
    assert fake.sleeps == []


def test_clock_stop() -> None:
    fake = FakeClock()
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 3:
            stop.set()

    clock = ReplayClock(1, first_ts=0.0, now=fake.now, sleep=sleep, max_sleep_s=5.0)
    assert clock.wait_for(3600.0, stop) is False
    assert fake.sleeps == [5.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        ReplayClock(-1, first_ts=0.0)

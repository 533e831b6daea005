"""The dashboard's live path (no server, no browser): a live update patches the session's Bokeh
data in place, leaving the page as a full redraw would, and reads only what it must."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bokeh.models as bm
import holoviews as hv
import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from bokeh.models.renderers import GlyphRenderer

from cluster.records import NewsEvent, WindowAggregate, format_time
from cluster.vectors import SearchFilter
from serve.live import Update
from ui import dashboard as d

NOW = datetime(2022, 5, 11, 12, 0, 30, tzinfo=UTC).timestamp()


@dataclass
class Totals:
    articles: int
    prices: int
    last_ts: float | None


@dataclass
class FakeStore:
    """Articles and prices, aggregated into windows of any step as the aggregator does, with
    every read counted."""

    articles: list[dict[str, Any]] = field(default_factory=list)
    prices: dict[float, float] = field(default_factory=dict)
    reads: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, ts: float, sentiment: float, source: str = "CoinDesk", **extra: Any) -> dict[str, Any]:
        label = "positive" if sentiment > 0.1 else "negative" if sentiment < -0.1 else "neutral"
        row = {
            "id": f"a{len(self.articles)}",
            "published_at": format_time(ts),
            "source": source,
            "sentiment": sentiment,
            "sentiment_label": label,
            "title": f"article {len(self.articles)}",
            "categories": ["regulation"],
            "topic_id": 1,
            "topic_label": "etf, sec",
            "url": f"https://example.com/{len(self.articles)}",
            "story_id": "",
            **extra,
        }
        self.articles.append(row)
        return row

    def window(self, start: float, step: int) -> WindowAggregate:
        rows = [a for a in self.articles if start <= d.to_ts(a["published_at"]) < start + step]
        closes = [p for t, p in sorted(self.prices.items()) if start <= t < start + step]
        sources: dict[str, int] = {}
        for a in rows:
            sources[a["source"]] = sources.get(a["source"], 0) + 1
        ranked = sorted(sources.items(), key=lambda kv: -kv[1])
        return WindowAggregate(
            start=format_time(start),
            step_s=step,
            count=len(rows),
            sentiment_mean=float(np.mean([a["sentiment"] for a in rows])) if rows else None,
            positive=sum(a["sentiment_label"] == "positive" for a in rows),
            neutral=sum(a["sentiment_label"] == "neutral" for a in rows),
            negative=sum(a["sentiment_label"] == "negative" for a in rows),
            close=closes[-1] if closes else None,
            topics=[1] if rows else [],
            topic_counts=[len(rows)] if rows else [],
            categories=["regulation"] if rows else [],
            category_counts=[len(rows)] if rows else [],
            sources=[s for s, _ in ranked],
            source_counts=[n for _, n in ranked],
        )


class FakeReader:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def totals(self) -> Totals:
        self.store.reads.append(("totals",))
        times = [d.to_ts(a["published_at"]) for a in self.store.articles] + list(self.store.prices)
        return Totals(len(self.store.articles), len(self.store.prices), max(times) if times else None)

    async def series(self, start: float, end: float, step: int) -> list[WindowAggregate]:
        self.store.reads.append(("series", start, end, step))
        first = int(start // step) * step
        n = int((end - first + step - 1) // step)
        return [self.store.window(first + i * step, step) for i in range(n)]

    async def latest(self, limit: int, flt: Any = None) -> list[dict[str, Any]]:
        self.store.reads.append(("latest", limit))
        rows = [a for a in self.store.articles if flt is None or d.row_matches(a, flt)]
        return sorted(rows, key=lambda a: a["published_at"], reverse=True)[:limit]

    async def sources(self) -> list[dict[str, Any]]:
        return []

    async def events(self, *_args: Any, **_kw: Any) -> list[Any]:
        return []

    async def topics(self) -> list[dict[str, Any]]:
        return [{"id": 1, "label": "etf, sec"}]

    async def pipeline(self) -> list[dict[str, Any]]:
        return []


def _store() -> FakeStore:
    store = FakeStore()
    for i in range(30):  # half an hour of news, one article a minute, and a price a minute
        ts = NOW - 1800 + 60 * i
        store.add(ts, 0.5 if i % 3 else -0.5)
        store.prices[ts] = 30_000.0 + 10 * i
    return store


class Calls:
    """The session's scheduler, recorded: changes without delay run at once, delayed ones wait."""

    def __init__(self) -> None:
        self.delayed: list[tuple[Any, float]] = []

    def __call__(self, fn: Any, delay_s: float) -> None:
        if delay_s > 0:
            self.delayed.append((fn, delay_s))
        else:
            fn()

    def run_delayed(self) -> None:
        waiting, self.delayed = self.delayed, []
        for fn, _ in waiting:
            fn()


def _dashboard(store: FakeStore, window: str = "15 min") -> tuple[d.Dashboard, Any, Calls]:
    dash = d.Dashboard(FakeReader(store))  # type: ignore[arg-type]
    calls = Calls()
    dash.call = calls
    dash.window.value = window
    plot = hv.renderer("bokeh").get_plot(dash.plots.object)
    asyncio.run(dash.refresh())
    return dash, plot, calls


def _glyph_data(plot: Any, glyph: str) -> dict[str, np.ndarray]:
    (renderer,) = [r for r in plot.state.select({"type": GlyphRenderer}) if type(r.glyph).__name__ == glyph]
    return {k: np.asarray(v) for k, v in renderer.data_source.data.items()}


def _time_range(plot: Any) -> tuple[Any, Any]:
    (rng,) = [r for r in plot.state.select({"type": bm.Range1d}) if isinstance(r.start, np.datetime64)]
    return rng.start, rng.end


def _price_range(plot: Any) -> tuple[float, float]:
    (rng,) = [
        r for r in plot.state.select({"type": bm.Range1d}) if isinstance(r.start, float) and r.start > 1000
    ]
    return rng.start, rng.end


def _assert_same_price_chart(live: Any, full: Any) -> None:
    for glyph in ("Line", "Scatter"):
        a, b = _glyph_data(live, glyph), _glyph_data(full, glyph)
        assert set(a) == set(b)
        for column in a:
            if column == "time":
                assert np.array_equal(a[column].astype("datetime64[ns]"), b[column].astype("datetime64[ns]"))
            else:
                np.testing.assert_allclose(a[column], b[column], equal_nan=True)
    np.testing.assert_allclose(_price_range(live), _price_range(full))


def _article(row: dict[str, Any]) -> Update:
    return Update("article", row)


def _aggregate(store: FakeStore, ts: float) -> Update:
    return Update("aggregate", store.window(int(ts // 60) * 60, 60).to_dict())


def test_a_live_article_patches_the_open_chart_as_a_full_redraw_would() -> None:
    store = _store()
    dash, plot, calls = _dashboard(store)
    line_source = next(
        r for r in plot.state.select({"type": GlyphRenderer}) if type(r.glyph).__name__ == "Line"
    )
    source = line_source.data_source
    before = len(source.data["time"])
    assert "**30** articles" in dash.status.object

    ts = NOW - 50  # the newest article, in the last bucket of the window
    row = store.add(ts, 0.9, source="Decrypt")
    store.prices[ts] = 31_000.0
    store.reads.clear()
    # the article first (scored), its window after (the aggregator counted it)
    asyncio.run(dash.live([_article(row)]))
    assert store.reads == [], "a live article is shown as it came, without a read"
    assert dash.table.value.iloc[0]["title"] == row["title"]
    assert "Decrypt" in dash.source.options
    asyncio.run(dash.live([_aggregate(store, ts)]))
    # the totals, and the one bucket that was written; not the window, not the news
    bucket = int(ts // 60) * 60
    assert store.reads == [("totals",), ("series", bucket, bucket + 60, 60)]
    assert "**31** articles" in dash.status.object
    assert len(source.data["time"]) == before
    assert line_source.data_source is source  # patched in place

    full, full_plot, _ = _dashboard(store)
    _assert_same_price_chart(plot, full_plot)
    assert dash.table.value["id"].tolist() == full.table.value["id"].tolist()
    # the aggregate charts wait for their turn (HEAVY_S after the last redraw) ...
    assert len(calls.delayed) == 1 and 0 < calls.delayed[0][1] <= d.HEAVY_S
    assert not dash._sent["shares"].equals(full._sent["shares"])
    calls.run_delayed()  # ... and then draw what a full refresh draws
    for name in ("shares", "categories", "lags"):
        assert dash._sent[name].equals(full._sent[name]), name
    assert d._same(dash._sent["sources"], full._sent["sources"])


def test_the_live_window_moves_by_streaming_new_buckets_with_rollover() -> None:
    store = _store()
    dash, plot, calls = _dashboard(store)
    start, end = dash._range or (0, 0)
    x0 = _time_range(plot)
    n = len(_glyph_data(plot, "Line")["time"])

    ts = end + 90  # two buckets past the window's end
    row = store.add(ts, -0.7)
    store.reads.clear()
    asyncio.run(dash.live([_article(row), _aggregate(store, ts)]))
    moved = dash._range or (0, 0)
    assert moved == (start + 120, end + 120)
    # only the two new buckets were read
    assert store.reads == [("totals",), ("series", end, end + 120, 60)]
    data = _glyph_data(plot, "Line")
    assert len(data["time"]) == n, "the oldest buckets left as the new ones came"
    x1 = _time_range(plot)
    assert (x1[0] - x0[0], x1[1] - x0[1]) == (np.timedelta64(120, "s"),) * 2

    calls.run_delayed()
    full, full_plot, _ = _dashboard(store)
    _assert_same_price_chart(plot, full_plot)
    assert dash._sent["series"].equals(full._sent["series"])
    assert dash.table.value["id"].tolist() == full.table.value["id"].tolist()
    assert "**31** articles" in dash.status.object


class NextTick(Calls):
    """Bokeh's scheduler as a session has it: a change without delay waits for the next tick
    too, in the order it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[Any] = []

    def __call__(self, fn: Any, delay_s: float) -> None:
        if delay_s > 0:
            self.delayed.append((fn, delay_s))
        else:
            self.ticks.append(fn)

    def run_ticks(self) -> None:
        while self.ticks:
            self.ticks.pop(0)()


@pytest.mark.parametrize("late_update", [False, True])
def test_a_new_window_sets_the_time_axis_even_behind_a_queued_live_draw(late_update: bool) -> None:
    """A live update queues a patch of the chart for the next tick; the window changes before
    that tick comes. The patch then draws the new window's data, and the axis must be the new
    window's too (the patch alone only shifts it by the move of the first bucket)."""
    store = _store()
    dash, plot, _ = _dashboard(store)
    ticks = NextTick()
    dash.call = ticks
    # The price chart's own draw sets the axis: not the aggregate charts' redraw after it (in a
    # browser those come one per tick, later, and may not share its range).
    dash._draw_heavy = lambda: None  # type: ignore[method-assign]
    ts = NOW - 50
    store.add(ts, 0.9)
    store.prices[ts] = 31_000.0
    asyncio.run(dash.live([_aggregate(store, ts)]))
    assert ticks.ticks, "the live update waits for the next tick"
    dash.window.value = "1 hour"
    asyncio.run(dash.refresh())
    if late_update:  # another live update after the refresh, before the tick
        asyncio.run(dash.live([_aggregate(store, ts)]))
    ticks.run_ticks()
    start, end = _time_range(plot)
    assert np.timedelta64(59, "m") <= end - start <= np.timedelta64(61, "m"), (start, end)
    _full, full_plot, _ = _dashboard(store, "1 hour")
    _assert_same_price_chart(plot, full_plot)


def test_live_articles_follow_the_filters_and_the_range() -> None:
    store = _store()
    dash, _plot, _ = _dashboard(store)
    dash.sentiment.value = "negative"
    asyncio.run(dash.refresh())
    shown = dash.table.value["id"].tolist()
    positive = store.add(NOW - 30, 0.8)
    old = store.add(NOW - 86_400, -0.8)  # before the 15-minute window
    negative = store.add(NOW - 20, -0.8)
    asyncio.run(dash.live([_article(positive), _article(old), _article(negative)]))
    assert dash.table.value["id"].tolist() == [negative["id"], *shown]
    # the same article again (a redelivery) stays one row
    asyncio.run(dash.live([_article(negative)]))
    assert dash.table.value["id"].tolist() == [negative["id"], *shown]


def test_row_matches_applies_a_search_filter_as_the_store_does() -> None:
    row = {"published_at": "2022-05-11T10:00:00Z", "source": "CoinDesk", "sentiment_label": "negative",
           "categories": ["regulation", "macro_markets"], "topic_id": 3, "story_id": "s"}  # fmt: skip
    t = datetime(2022, 5, 11, 10, tzinfo=UTC).timestamp()
    assert d.row_matches(row, SearchFilter(start_ts=t, end_ts=t + 1, category="macro_markets", topic_id=3))
    assert not d.row_matches(row, SearchFilter(end_ts=t))  # the end is excluded
    assert not d.row_matches(row, SearchFilter(start_ts=t + 1))
    assert not d.row_matches(row, SearchFilter(source="Decrypt"))
    assert not d.row_matches(row, SearchFilter(category="security_hacks"))
    assert not d.row_matches({**row, "published_at": "not a time"}, SearchFilter())


def test_merge_news_keeps_the_newest_rows_once() -> None:
    def row(i: int, minute: int, title: str = "") -> dict[str, Any]:
        return {"id": f"a{i}", "published_at": format_time(NOW + 60 * minute), "title": title or f"t{i}",
                "sentiment": 0.1, "categories": ["regulation"]}  # fmt: skip

    current = d.news_frame([row(2, 2), row(1, 1), row(0, 0)])
    merged = d.merge_news(current, [row(3, 1, "late"), row(4, 5), row(4, 5, "edited")], limit=4)
    assert merged["id"].tolist() == ["a4", "a2", "a3", "a1"]  # newest first; a0 beyond the limit
    assert merged.loc[0, "title"] == "edited"  # an article's latest message wins
    assert list(merged.columns) == d.NEWS_COLUMNS


def test_sync_source_patches_streams_with_rollover_or_replaces() -> None:
    times = pd.date_range("2022-05-11 10:00", periods=4, freq="min").to_numpy()
    source = bm.ColumnDataSource(
        {"time": times.astype("datetime64[us]"), "v": np.array([1.0, np.nan, 3.0, 4.0])}
    )
    doc = Document()  # what a session would send to the browser
    doc.add_root(source)
    sent: list[str] = []
    doc.on_change(lambda event: sent.append(type(event).__name__))

    assert d.sync_source(source, {"time": times, "v": np.array([1.0, np.nan, 3.0, 4.0])}) == "same"
    assert d.sync_source(source, {"time": times, "v": np.array([1.0, np.nan, 3.0, 5.0])}) == "patch"
    assert source.data["v"][3] == 5.0
    later = times + np.timedelta64(2, "m")
    assert d.sync_source(source, {"time": later, "v": np.array([3.0, 6.0, 7.0, 8.0])}) == "stream"
    assert np.array_equal(np.asarray(source.data["time"]).astype("datetime64[ns]"), later)
    np.testing.assert_array_equal(source.data["v"], [3.0, 6.0, 7.0, 8.0])  # 2 rows in, 2 out, 1 patched
    assert len(source.data["v"]) == 4
    assert d.sync_source(source, {"time": times[:2], "v": np.array([0.0, 0.0])}) == "replace"
    assert sent == [
        "ColumnsPatchedEvent",
        "ColumnsStreamedEvent",
        "ColumnsPatchedEvent",
        "ColumnDataChangedEvent",
    ]
    # a read-only column (as HoloViews leaves them) is sent whole, then patched as usual
    frozen = np.array([1.0, 2.0])
    frozen.setflags(write=False)
    source.data = {"time": times[:2], "v": frozen}
    sent.clear()
    assert d.sync_source(source, {"time": times[:2], "v": np.array([1.0, 5.0])}) == "replace"
    assert d.sync_source(source, {"time": times[:2], "v": np.array([1.0, 6.0])}) == "patch"
    np.testing.assert_array_equal(source.data["v"], [1.0, 6.0])
    assert sent == ["ColumnDataChangedEvent", "ColumnsPatchedEvent"]


@pytest.mark.parametrize("values", [[30_000.0, 30_140.0, np.nan], [1.0, 2.0]])
def test_padded_extent_pads_as_holoviews_pads_a_curve(values: list[float]) -> None:
    frame = pd.DataFrame(
        {"time": pd.date_range("2022-05-11", periods=len(values), freq="h"), "close": values}
    )
    plot = hv.renderer("bokeh").get_plot(hv.Curve(frame, "time", "close"))
    got = d.padded_extent(np.asarray(values))
    assert got == pytest.approx((plot.handles["y_range"].start, plot.handles["y_range"].end))
    assert d.padded_extent(np.array([5.0, np.nan])) is None


def test_shift_range_moves_datetime_and_millisecond_ends() -> None:
    rng = bm.Range1d(start=np.datetime64("2022-05-11T10:00"), end=np.datetime64("2022-05-11T11:00"))  # type: ignore[arg-type]
    d._shift_range(rng, np.timedelta64(60, "s"))
    assert (rng.start, rng.end) == (np.datetime64("2022-05-11T10:01"), np.datetime64("2022-05-11T11:01"))
    ms = bm.Range1d(start=0.0, end=1000.0)
    d._shift_range(ms, np.timedelta64(2, "s"))
    assert (ms.start, ms.end) == (2000.0, 3000.0)
    naive = bm.Range1d(start=datetime(2022, 5, 11), end=datetime(2022, 5, 12))
    d._shift_range(naive, np.timedelta64(1, "h"))
    assert naive.start == datetime(2022, 5, 11) + timedelta(hours=1)


def test_the_aggregate_charts_redraw_one_per_tick_and_the_lead_lag_in_place() -> None:
    """Each HoloViews update costs a walk of the whole document: the aggregate charts are
    redrawn one per tick of the session (a live update is drawn between two), and the
    lead/lag bars are patched in place."""
    store = _store()
    dash, _plot, calls = _dashboard(store)
    calls.run_delayed()
    lag_plot = hv.renderer("bokeh").get_plot(dash.lag_plot.object)  # the hook keeps its source
    (bars,) = lag_plot.state.select({"type": GlyphRenderer})
    before = np.asarray(bars.data_source.data["corr"]).copy()
    ticks: list[float] = []

    def call(fn: Any, delay_s: float) -> None:
        ticks.append(delay_s)
        calls(fn, delay_s)

    dash.call = call
    for i in range(3):  # news at several minutes, so the sentiment/return correlations move
        ts = NOW - 50 - 60 * i
        store.prices[ts] = 29_000.0 - 100 * i
        asyncio.run(dash.live([_article(store.add(ts, -0.9)), _aggregate(store, ts)]))
    ticks.clear()
    calls.run_delayed()
    assert len(ticks) >= 5 and set(ticks) == {0}  # shares, categories, river, sources, lags, tables
    assert bars.data_source is lag_plot.state.select_one({"type": GlyphRenderer}).data_source
    after = np.asarray(bars.data_source.data["corr"])
    assert not np.allclose(before, after, equal_nan=True)
    np.testing.assert_allclose(after, d.lead_lag(dash._frame)["corr"].to_numpy(), equal_nan=True)

    # a live update on its way: the rest of the redraw waits for it
    dash.pending = lambda: True
    ts = NOW - 40
    dash._last_heavy = -math.inf
    asyncio.run(dash.live([_article(store.add(ts, 0.9)), _aggregate(store, ts)]))
    assert calls.delayed and calls.delayed[0][1] == d.BUSY_RETRY_S
    shown = dash._sent["shares"]
    dash.pending = lambda: False
    calls.run_delayed()
    assert dash._sent["shares"] is not shown and dash._sent["shares"].equals(dash._frame)


def test_a_steady_live_stream_delays_the_aggregate_charts_but_does_not_starve_them() -> None:
    """A live update always on its way (a busy stream): each chart waits BUSY_RETRIES retries
    at most, then is drawn anyway; so is the redraw that was due HEAVY_S after the last."""
    store = _store()
    dash, _plot, calls = _dashboard(store)
    calls.run_delayed()
    dash.pending = lambda: True  # never idle
    dash.window.value = "1 hour"
    asyncio.run(dash.refresh())  # a new range: the aggregate charts are redrawn now
    for _ in range(100):
        if not calls.delayed:
            break
        assert all(delay == d.BUSY_RETRY_S for _, delay in calls.delayed)
        calls.run_delayed()
    assert calls.delayed == []
    for name in ("shares", "categories", "river", "sources", "lags"):
        assert name in dash._sent
    assert dash._sent["shares"].equals(dash._frame)

    dash._last_heavy = time.monotonic()  # just redrawn: the next redraw is due HEAVY_S later
    ts = NOW - 50
    asyncio.run(dash.live([_article(store.add(ts, -0.9)), _aggregate(store, ts)]))
    ((later, wait),) = calls.delayed
    assert 0 < wait <= d.HEAVY_S
    calls.delayed = []
    redrawn: list[int] = []
    dash._redraw_heavy = lambda: redrawn.append(retries)  # type: ignore[method-assign]
    later()
    retries = 0
    while calls.delayed:
        assert len(calls.delayed) == 1 and calls.delayed[0][1] == d.BUSY_RETRY_S
        retries += 1
        calls.run_delayed()
    assert retries == d.BUSY_RETRIES and redrawn == [d.BUSY_RETRIES]


def test_a_subscription_wakes_its_session_for_each_update() -> None:
    from serve.live import StreamFilter, Subscription

    woken: list[int] = []

    async def run() -> None:
        sub = Subscription(StreamFilter(), asyncio.Queue(2), wake=lambda: woken.append(sub.queue.qsize()))
        sub.put(Update("article", {"id": "a"}))
        sub.put(Update("aggregate", {"start": "2022-05-11T10:00:00Z"}))
        sub.put(Update("event", {}))  # full: the oldest goes, the session is still woken
        assert woken == [1, 2, 2] and sub.dropped == 1
        assert [u.kind for u in sub.drain()] == ["aggregate", "event"]

        def broken() -> None:
            raise RuntimeError("session gone")

        sub.wake = broken
        sub.put(Update("article", {}))  # a failing wake-up is logged, never raised to the feed
        sub.close()
        assert sub.wake is None

    asyncio.run(run())


def test_the_aggregate_charts_redraw_between_live_updates() -> None:
    """Right after a live update's own draw when they are due; else HEAVY_S after the last
    redraw, but not while another live update is on its way."""
    store = _store()
    dash, _plot, calls = _dashboard(store)
    calls.run_delayed()  # what loading left to do
    dash._last_heavy = -math.inf  # the last redraw was long ago
    ts = NOW - 50
    asyncio.run(dash.live([_article(store.add(ts, -0.9)), _aggregate(store, ts)]))
    assert calls.delayed == []  # drawn at once, behind the update
    drawn = dash._sent["shares"]
    assert drawn.equals(dash._frame)

    asyncio.run(dash.live([_article(store.add(ts + 1, 0.9)), _aggregate(store, ts + 1)]))
    ((_, wait),) = calls.delayed
    assert 0 < wait <= d.HEAVY_S
    dash.pending = lambda: True  # a live update is on its way when the redraw comes
    calls.run_delayed()
    assert dash._sent["shares"] is drawn
    ((_, retry),) = calls.delayed
    assert retry == d.BUSY_RETRY_S
    dash.pending = lambda: False
    calls.run_delayed()
    assert dash._sent["shares"].equals(dash._frame) and calls.delayed == []


class SlowEvents(FakeReader):
    """A reader whose events read waits for ``gate`` while one is set, then answers with one
    event in the middle of the range it was asked for, whatever the page shows by then."""

    def __init__(self, store: FakeStore) -> None:
        super().__init__(store)
        self.gate: asyncio.Event | None = None

    async def events(self, start: float, end: float, *_args: Any, **_kw: Any) -> list[Any]:
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()
        mid = (start + end) / 2
        return [
            NewsEvent(
                id=f"volume:kw:etf:{mid}", kind="volume", key="kw:etf", label="etf", keywords=["etf"],
                start=format_time(mid - 600), peak=format_time(mid - 300), end=format_time(mid),
                peak_value=9.0, baseline=1.0, score=6.0, examples=[],
            )
        ]  # fmt: skip


def _history_store() -> FakeStore:
    store = _store()
    for i in range(3 * 24):  # and three days of news a month before, one an hour
        ts = NOW - 30 * 86400 + 3600 * i
        store.add(ts, 0.2)
        store.prices[ts] = 20_000.0 + i
    return store


@pytest.mark.parametrize("read", ["read_context", "_read_events"])
def test_events_read_for_the_old_range_are_not_drawn_over_a_new_one(read: str) -> None:
    """The live window's events are being read when a history range is picked: their answer,
    coming after the history range is drawn, must not go on its time axis (it had widened the
    axis from the picked start to today)."""
    reader = SlowEvents(_history_store())
    dash = d.Dashboard(reader)  # type: ignore[arg-type]
    dash.call = Calls()
    plot = hv.renderer("bokeh").get_plot(dash.plots.object)
    lo = datetime.fromtimestamp(NOW - 30 * 86400, UTC).replace(tzinfo=None)
    picked = (lo, lo + timedelta(days=3))

    async def run() -> None:
        await dash.refresh()
        gate = reader.gate = asyncio.Event()
        stale = asyncio.create_task(getattr(dash, read)())  # held at its events read
        await asyncio.sleep(0)
        assert reader.gate is None, "the live window's events read is waiting"
        dash.mode.value = d.HISTORY
        dash.picker.value = picked
        await dash.refresh()  # the picked range, drawn with its own events
        gate.set()
        await stale

    asyncio.run(run())
    start, end = _time_range(plot)
    assert np.timedelta64(71, "h") <= end - start <= np.timedelta64(73, "h"), (start, end)
    spans = dash.event_pipe.data  # the picked range's event, in its table too
    assert len(spans) == 1 and pd.Timestamp(lo) <= spans["start"].iloc[0] <= pd.Timestamp(picked[1]), spans
    assert list(dash.events.value["start"]) == [spans["start"].iloc[0].strftime("%Y-%m-%d %H:%M")]


def test_the_aggregate_charts_of_the_old_range_do_not_widen_the_new_ones_axis() -> None:
    """The aggregate charts redraw one per tick; a history range is picked while they draw the
    live window. Every chart but the price chart widens the shared time axis to take in what it
    draws (HoloViews unites a shared range with each update), so a chart drawn with the live
    window after the history range is drawn had stretched the axis from the picked start to
    today: what is left of the old redraw must not be drawn."""
    store = _history_store()
    dash, plot, _ = _dashboard(store, "24 hours")
    ts = NOW - 50  # news in the live window: its aggregate charts are due a redraw
    store.add(ts, 0.9, topic_id=2)
    asyncio.run(dash.live([_aggregate(store, ts)]))
    ticks = NextTick()
    dash.call = ticks
    dash._redraw_heavy()  # the live window's aggregate charts, the first drawn now
    assert ticks.ticks, "the other charts wait for the next ticks"
    lo = datetime.fromtimestamp(NOW - 30 * 86400, UTC).replace(tzinfo=None)
    dash.mode.value = d.HISTORY
    dash.picker.value = (lo, lo + timedelta(days=3))
    asyncio.run(dash.refresh())
    ticks.run_ticks()
    start, end = _time_range(plot)
    assert np.timedelta64(71, "h") <= end - start <= np.timedelta64(73, "h"), (start, end)
    times = dash.river_pipe.data[0]["time"]
    assert len(times) and times.max() <= pd.Timestamp(lo + timedelta(days=3)), times

"""The live dashboard: price, mean sentiment and article volume on one time axis, the
latest scored news with their categories and topics, the events and topics of the window.

    load, a new window / mode / range / filter, FALLBACK_S of quiet:
        ReadService -> totals, series windows, latest articles -> every chart through HoloViews
    live feed (serve layer), per session, as soon as something is written (it wakes the
    session: the update is scheduled on its document at once, nothing polls):
        a scored article    -> into the news table as it came (no read)
        a written window    -> totals + that bucket only (and the buckets a moving window
                               gains) -> patched / streamed into the price and sentiment
                               chart's Bokeh data source (rollover: old buckets leave), the
                               status line and the mood
        then, at most every HEAVY_S: the aggregate charts (volume, shares, river, categories,
        lead/lag) and the topics table, from the windows in memory, one chart per tick
        and every CONTEXT_S: source health, events, topic labels, pipeline health

An idle dashboard costs nothing, and many tabs share the replica's one set of Pulsar readers.

In Live mode the window ends at the newest data (for a replay, the replayed "now") and
moves as data arrives; in History mode it is the range picked (UTC), its bucket step follows
its span, and live updates do not move it. The news table is filtered (source, sentiment,
category) and restricted to the charts' range; a click on an article shows its nearest
neighbours and its story's timeline. Below the time-linked charts (with a river of the top
topics' shares), a lead/lag chart correlates bucket sentiment with later price returns.
Text from the internet is shown as text, never as HTML.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from cluster.records import WindowAggregate, format_time, to_ts

log = logging.getLogger(__name__)

hv.extension("bokeh", logo=False)

WINDOWS: dict[str, tuple[int, int]] = {
    # label: (span seconds, step seconds)
    "15 min": (15 * 60, 60),
    "1 hour": (3600, 60),
    "6 hours": (6 * 3600, 5 * 60),
    "24 hours": (24 * 3600, 15 * 60),
    "7 days": (7 * 86400, 3600),
    "30 days": (30 * 86400, 6 * 3600),
    "1 year": (365 * 86400, 86400),
}
DEFAULT_WINDOW = "7 days"
# A live update is applied as soon as the feed hands it over (the session is woken, it does not
# poll); the tick only catches what a wake-up could not (no session document) and the fallback.
TICK_MS = 1000
FALLBACK_S = 15.0  # read everything again when nothing was read for this long
HEAVY_S = 3.0  # under a live stream, the aggregate charts redraw at most this often
BUSY_RETRY_S = 0.2  # ... and not while a live update is on its way: retried after this,
BUSY_RETRIES = 5  # ... this many times at most: under a steady live stream it would never run
CONTEXT_S = 15.0  # ... and source health, events, topic labels, pipeline health are read so often
NEWS_LIMIT = 50  # rows of the latest-news table
LIVE_QUEUE = 500  # live updates a session may have waiting (the oldest are dropped beyond)
SERIES_COLUMNS = ["time", "count", "sentiment_mean", "positive", "neutral", "negative", "close"]
NEWS_COLUMNS = ["published_at", "source", "sentiment_label", "sentiment", "title", "categories",
                "topic_label", "url", "id", "story_id"]  # fmt: skip
HIDDEN_NEWS_COLUMNS = ["id", "story_id"]  # kept in the table's data, for a click to find the article
EVENT_COLUMNS = ["start", "end", "kind", "label", "score", "keywords"]
TOPIC_COLUMNS = ["topic", "articles", "share"]
SOURCE_COLUMNS = ["name", "kind", "state", "new", "duplicates", "rejected", "errors", "last_success_at",
                  "next_poll_at", "last_error"]  # fmt: skip
PIPELINE_COLUMNS = ["stage", "actors", "backlog", "unacked", "processed", "last_batch_at"]
SEARCH_COLUMNS = ["score", "published_at", "source", "sentiment_label", "title", "url"]
LIVE, HISTORY = "Live", "History"
# History mode: the bucket step is the smallest of these giving at most MAX_BUCKETS buckets.
HISTORY_STEPS = [60, 5 * 60, 15 * 60, 30 * 60, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400]
MAX_BUCKETS = 500
RIVER_TOPICS = 8  # the topic river stacks the window's largest topics
VOLUME_SOURCES = 6  # the volume chart stacks the window's largest sources, the rest as "other"
OTHER = "other"
SHARES = {"negative": "#d62828", "neutral": "#adb5bd", "positive": "#2a9d8f"}  # stacking order, colour
# the bars' corners; "time" names the x axis so the bars share the other charts' time axis
BAR_DIMS = ["time", "y0", "time_end", "y1"]
# The mood beside the price: count-weighted mean sentiment of the last MOOD_BUCKETS buckets
# that had news; above +MOOD_BAND bullish, below -MOOD_BAND bearish, else neutral.
MOOD_BUCKETS = 6
MOOD_BAND = 0.1
MAX_LAG = 6  # the lead/lag panel: lags -MAX_LAG..+MAX_LAG buckets
ALL = "all"
SENTIMENTS = [ALL, "negative", "neutral", "positive"]


class Subscription(Protocol):
    dropped: int

    def drain(self) -> list[Any]: ...
    def close(self) -> None: ...


class Live(Protocol):
    def subscribe(
        self, flt: Any = None, maxsize: int = ..., wake: Callable[[], None] | None = None
    ) -> Subscription: ...


class Reader(Protocol):
    async def series(self, start: float, end: float, step_s: int) -> list[Any]: ...
    async def latest(self, limit: int, flt: Any = None) -> list[dict[str, Any]]: ...
    async def sources(self) -> list[dict[str, Any]]: ...
    async def totals(self) -> Any: ...
    async def events(self, start: float, end: float, limit: int, distinct: bool = True) -> list[Any]: ...
    async def topics(self) -> list[dict[str, Any]]: ...
    async def search(self, query: str, k: int, flt: Any) -> list[Any]: ...
    async def similar(self, article_id: str, k: int, flt: Any) -> list[Any] | None: ...
    async def timeline(self, story_id: str, limit: int) -> list[dict[str, Any]]: ...
    async def pipeline(self) -> list[dict[str, Any]]: ...
    def live(self) -> Live: ...


def _step_label(step_s: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if step_s % size == 0:
            return f"{step_s // size}{unit}"
    return f"{step_s}s"


def windows_frame(windows: list[Any]) -> pd.DataFrame:
    """Aggregate windows -> one row per bucket (times as UTC datetimes, no zone)."""
    if not windows:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in SERIES_COLUMNS}).astype(
            {"time": "datetime64[ns]"}
        )
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime([w.start for w in windows], utc=True).tz_localize(None),
            "count": [w.count for w in windows],
            "sentiment_mean": [w.sentiment_mean for w in windows],
            "positive": [w.positive for w in windows],
            "neutral": [w.neutral for w in windows],
            "negative": [w.negative for w in windows],
            "close": [w.close for w in windows],
        }
    )
    return frame.astype({"sentiment_mean": "float64", "close": "float64"})


def sources_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per live source; ``state`` says at a glance whether it works."""

    def state(row: dict[str, Any]) -> str:
        if not row.get("enabled", True):
            return "disabled"
        if row.get("consecutive_failures"):
            return "failing"
        return "ok" if row.get("last_success_at") else "waiting"

    return pd.DataFrame(
        [{**{c: r.get(c) for c in SOURCE_COLUMNS}, "state": state(r)} for r in rows], columns=SOURCE_COLUMNS
    )


def news_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    def cell(row: dict[str, Any], column: str) -> Any:
        value = row.get(column)
        return ", ".join(value) if column == "categories" and isinstance(value, list) else value

    frame = pd.DataFrame([{c: cell(r, c) for c in NEWS_COLUMNS} for r in rows], columns=NEWS_COLUMNS)
    frame["sentiment"] = frame["sentiment"].astype("float64").round(3)
    return frame


def events_frame(events: list[Any]) -> pd.DataFrame:
    """Events (records with ISO times), strongest first."""
    rows = [
        {
            "start": e.start[:16].replace("T", " "),
            "end": (e.end or "open")[:16].replace("T", " "),
            "kind": e.kind,
            "label": e.label,
            "score": round(float(e.score), 1),
            "keywords": ", ".join(e.keywords[:6]),
        }
        for e in events
    ]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def topics_frame(windows: list[Any], labels: dict[int, str], top: int = 12) -> pd.DataFrame:
    """The window's largest topics: articles per topic summed over its buckets."""
    counts: dict[int, int] = {}
    for w in windows:
        for topic, n in zip(getattr(w, "topics", []), getattr(w, "topic_counts", []), strict=False):
            counts[topic] = counts.get(topic, 0) + n
    total = sum(getattr(w, "count", 0) for w in windows) or 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    rows = [
        {"topic": labels.get(t, f"topic {t}"), "articles": n, "share": f"{100 * n / total:.1f}%"}
        for t, n in ranked
    ]
    return pd.DataFrame(rows, columns=TOPIC_COLUMNS)


def categories_frame(windows: list[Any], placeholder_ts: float | None = None) -> pd.DataFrame:
    """Long form (time, category, articles) of every bucket x category: the full grid, with 0
    where a bucket had no article of a category, categories by their readable labels. Without
    windows, one row of zeros per category at ``placeholder_ts`` (default: now), so the chart is
    born with its categorical axis."""
    from models.categories import CATEGORIES, CATEGORY_LABELS

    if windows:
        starts = [w.start for w in windows]
        counts = [
            dict(zip(getattr(w, "categories", []), getattr(w, "category_counts", []), strict=False))
            for w in windows
        ]
    else:
        ts = datetime.now(UTC).timestamp() if placeholder_ts is None else placeholder_ts
        starts, counts = [datetime.fromtimestamp(ts, UTC).isoformat()], [{}]
    rows = [
        {"time": start, "category": CATEGORY_LABELS.get(c, c), "articles": int(found.get(c, 0))}
        for start, found in zip(starts, counts, strict=True)
        for c in CATEGORIES
    ]
    frame = pd.DataFrame(rows, columns=["time", "category", "articles"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True).dt.tz_localize(None)
    return frame.astype({"articles": "int64"})


def event_spans(events: list[Any]) -> pd.DataFrame:
    """(start, end) of each event as naive UTC datetimes; an open event runs to its peak + 1 h."""
    spans = []
    for e in events:
        start = pd.Timestamp(e.start).tz_convert(None)
        end = pd.Timestamp(e.end).tz_convert(None) if e.end else pd.Timestamp(e.peak).tz_convert(None)
        spans.append({"start": start, "end": max(end, start + pd.Timedelta(hours=1))})
    return pd.DataFrame(spans, columns=["start", "end"]).astype(
        {"start": "datetime64[ns]", "end": "datetime64[ns]"}
    )


def history_step(span_s: float) -> int:
    """The bucket step for a chosen range: the smallest of HISTORY_STEPS giving at most
    MAX_BUCKETS buckets, else whole days."""
    for step in HISTORY_STEPS:
        if span_s / step <= MAX_BUCKETS:
            return step
    return 86400 * math.ceil(span_s / 86400 / MAX_BUCKETS)


def history_range(start: Any, end: Any) -> tuple[float, float, int]:
    """(start, end, step) of a picked range (datetimes; naive ones are UTC), snapped to the step."""
    lo, hi = (pd.Timestamp(t) for t in (start, end))
    a, b = sorted(t.timestamp() if t.tzinfo else t.tz_localize(UTC).timestamp() for t in (lo, hi))
    b = max(b, a + 60)
    step = history_step(b - a)
    return float(int(a // step) * step), float(math.ceil(b / step) * step), step


def river_frame(
    windows: list[Any], labels: dict[int, str], top: int = RIVER_TOPICS
) -> tuple[pd.DataFrame, list[str]]:
    """Wide frame (time, one column per top topic) of each topic's share of its bucket's
    articles, with the topics' labels in column order (largest topic first)."""
    totals: dict[int, int] = {}
    for w in windows:
        for topic, n in zip(getattr(w, "topics", []), getattr(w, "topic_counts", []), strict=False):
            totals[topic] = totals.get(topic, 0) + n
    ranked = [t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    data: dict[str, Any] = {
        "time": pd.to_datetime([w.start for w in windows], utc=True).tz_localize(None)
        if windows
        else pd.Series(dtype="datetime64[ns]")
    }
    for i, topic in enumerate(ranked):
        shares = []
        for w in windows:
            counts = dict(zip(getattr(w, "topics", []), getattr(w, "topic_counts", []), strict=False))
            shares.append(counts.get(topic, 0) / w.count if w.count else 0.0)
        data[f"t{i}"] = pd.Series(shares, dtype="float64")
    return pd.DataFrame(data), [labels.get(t, f"topic {t}") for t in ranked]


def source_volume_frame(windows: list[Any], top: int = VOLUME_SOURCES) -> tuple[pd.DataFrame, list[str]]:
    """Stacked bars of articles per source: one rectangle (time, y0, time_end, y1, layer) per bucket
    and source, the window's ``top`` largest sources first and the rest summed as "other";
    returns the rectangles and the sources in stacking order."""
    totals: dict[str, int] = {}
    for w in windows:
        for source, n in zip(getattr(w, "sources", []), getattr(w, "source_counts", []), strict=False):
            totals[source] = totals.get(source, 0) + n
    ranked = [src for src, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    order = ranked + ([OTHER] if len(totals) > len(ranked) else [])
    rows = []
    for w in windows:
        counts = {src: 0 for src in order}
        for source, n in zip(getattr(w, "sources", []), getattr(w, "source_counts", []), strict=False):
            counts[source if source in ranked else OTHER] += n
        x0 = pd.Timestamp(w.start).tz_convert(None)
        rows += _stack(x0, x0 + pd.Timedelta(seconds=w.step_s), [(src, counts[src]) for src in order])
    return _bars(rows).astype({"y0": "int64", "y1": "int64"}), order


def _stack(x0: pd.Timestamp, x1: pd.Timestamp, layers: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """One bucket's bar: a rectangle per non-empty layer, each on top of the previous."""
    rows, y = [], 0.0
    for layer, value in layers:
        if value:
            rows.append({"time": x0, "y0": y, "time_end": x1, "y1": y + value, "layer": layer})
            y += value
    return rows


def _bars(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*BAR_DIMS, "layer"]).astype(
        {"time": "datetime64[ns]", "time_end": "datetime64[ns]", "y0": "float64", "y1": "float64"}
    )


def share_bars_frame(data: pd.DataFrame) -> pd.DataFrame:
    """Negative / neutral / positive share of each bucket's articles as stacked bars (time,
    y0, time_end, y1, layer); a bucket without articles has no bar."""
    times = data["time"]
    width = times.iloc[1] - times.iloc[0] if len(data) >= 2 else pd.Timedelta(minutes=1)
    rows: list[dict[str, Any]] = []
    for i, total in enumerate(data["count"].tolist()):
        if total:
            start = pd.Timestamp(times.iloc[i])
            shares = [(k, float(data[k].iloc[i]) / total) for k in SHARES]
            rows += _stack(start, start + width, shares)
    return _bars(rows)


def mood(
    frame: pd.DataFrame, buckets: int = MOOD_BUCKETS, band: float = MOOD_BAND
) -> tuple[str, float | None]:
    """("bullish" | "neutral" | "bearish", score) of the latest news: the count-weighted mean
    sentiment of the last ``buckets`` buckets with articles; ("no news", None) without any."""
    recent = frame[frame["count"] > 0].tail(buckets)
    if recent.empty:
        return "no news", None
    score = float((recent["sentiment_mean"] * recent["count"]).sum() / recent["count"].sum())
    label = "bullish" if score > band else "bearish" if score < -band else "neutral"
    return label, score


def lead_lag(frame: pd.DataFrame, max_lag: int = MAX_LAG) -> pd.DataFrame:
    """Correlation of each bucket's mean sentiment with the price return ``lag`` buckets later
    (return: close's change from the previous bucket), for lags -max_lag..+max_lag.

    A positive lag whose correlation stands out means sentiment led the price; ``n`` is how
    many buckets had both values at that lag (``corr`` is NaN below 3 or for a constant series).
    """
    sentiment = frame["sentiment_mean"].astype("float64").reset_index(drop=True)
    returns = frame["close"].astype("float64").pct_change(fill_method=None).reset_index(drop=True)
    rows = []
    for lag in range(-max_lag, max_lag + 1):
        pair = pd.DataFrame({"s": sentiment, "r": returns.shift(-lag)}).dropna()
        n = len(pair)
        corr = float("nan")
        if n >= 3 and pair["s"].std() > 0 and pair["r"].std() > 0:
            corr = float(pair["s"].corr(pair["r"]))
        rows.append({"lag": lag, "corr": corr, "n": n})
    return pd.DataFrame(rows, columns=["lag", "corr", "n"]).astype(
        {"lag": "int64", "corr": "float64", "n": "int64"}
    )


def pipeline_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per consuming stage; ``last_batch_at`` as UTC text ("never" when 0)."""

    def when(ts: Any) -> str:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "never"

    return pd.DataFrame(
        [
            {**{c: r.get(c) for c in PIPELINE_COLUMNS}, "last_batch_at": when(r.get("last_batch_at"))}
            for r in rows
        ],
        columns=PIPELINE_COLUMNS,
    )


def row_matches(row: dict[str, Any], flt: Any) -> bool:
    """Whether an article (a stored payload or a live ``news.scored`` record) passes a
    :class:`cluster.vectors.SearchFilter`, as the store would apply it."""
    try:
        ts = to_ts(str(row.get("published_at")))
    except ValueError:
        return False
    if (flt.start_ts is not None and ts < flt.start_ts) or (flt.end_ts is not None and ts >= flt.end_ts):
        return False
    for key, value in flt.matches():
        found = row.get(key)
        if not (value in found if isinstance(found, list) else found == value):
            return False
    return True


def _times(column: pd.Series) -> pd.Series:
    """ISO times as epoch seconds (NaN where one does not parse)."""
    parsed = pd.to_datetime(column, utc=True, format="ISO8601", errors="coerce")
    return (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


def merge_news(current: pd.DataFrame, rows: list[dict[str, Any]], limit: int = NEWS_LIMIT) -> pd.DataFrame:
    """The news table with ``rows`` (newest message last) added: one row per article (its
    latest message), newest published first, at most ``limit``."""
    new = news_frame(rows[::-1])
    frame = pd.concat([new, current], ignore_index=True) if len(current) else new
    frame = frame.drop_duplicates("id", keep="first")
    order = _times(frame["published_at"]).sort_values(ascending=False, kind="stable").index
    return frame.loc[order].head(limit).reset_index(drop=True)


def _empty_window(ts: float, step: int) -> WindowAggregate:
    return WindowAggregate(
        start=format_time(ts), step_s=step, count=0, sentiment_mean=None, positive=0, neutral=0, negative=0
    )


@dataclass(frozen=True)
class LiveSource:
    """A chart's Bokeh data source in one session, and the ranges it is drawn on."""

    source: Any  # bokeh.models.ColumnDataSource
    x_range: Any
    y_range: Any


def _as_ns(values: Any) -> np.ndarray:
    return np.asarray(values).astype("datetime64[ns]")


def sync_source(source: Any, new: dict[str, Any], key: str = "time") -> str:
    """Make a data source's columns (``key``, ascending, and float columns) equal ``new``
    with the least sent to the browser. Returns what was done: ``"same"``; ``"patch"`` (the
    changed values); ``"stream"`` (the window moved: its new rows streamed in with a rollover
    that drops as many of the oldest, so the data stays the window's size; then any patches);
    ``"replace"`` (anything else: other times or columns, or a read-only column sent whole)."""
    old = source.data
    as_key = _as_ns if key == "time" else np.asarray
    t_new = as_key(new[key])
    n = len(t_new)
    if set(old) != set(new) or len(old[key]) != n:
        source.data = dict(new)
        return "replace"
    how = "patch"
    t_old = as_key(old[key])
    if not np.array_equal(t_old, t_new):
        k = int(np.searchsorted(t_old, t_new[0]))
        if not (0 < k < n and np.array_equal(t_old[k:], t_new[: n - k])):
            source.data = dict(new)
            return "replace"
        tail = {c: np.asarray(v)[n - k :].astype(np.asarray(old[c]).dtype) for c, v in new.items()}
        source.stream(tail, rollover=n)
        how = "stream"
    patches: dict[str, list[tuple[int, float]]] = {}
    for column, values in new.items():
        if column == key:
            continue
        current = source.data[column]
        wanted = np.asarray(values, dtype="float64")
        now = np.asarray(current, dtype="float64")
        changed = np.flatnonzero(~((now == wanted) | (np.isnan(now) & np.isnan(wanted))))
        if not len(changed):
            continue
        if isinstance(current, np.ndarray) and not current.flags.writeable:
            # HoloViews hands Bokeh read-only arrays, which Bokeh will not patch: this column
            # goes whole, once (then it is ours, and writable)
            source.data[column] = wanted.copy()
            how = "replace" if how == "patch" else how
        else:
            patches[column] = [(int(i), float(wanted[i])) for i in changed]
    if patches:
        source.patch(patches)
    return how if patches or how != "patch" else "same"


def padded_extent(values: np.ndarray, padding: float = 0.1) -> tuple[float, float] | None:
    """(low, high) of the finite values padded as HoloViews pads a curve's y axis; None
    without two different values."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0 or finite.min() == finite.max():
        return None
    lo, hi = float(finite.min()), float(finite.max())
    return lo - padding * (hi - lo), hi + padding * (hi - lo)


def _first_time(source: Any) -> np.datetime64 | None:
    times = source.data.get("time")
    return _as_ns(times[:1])[0] if times is not None and len(times) else None


def _shift_range(rng: Any, delta: np.timedelta64) -> None:
    """Move a Bokeh time range by ``delta`` (its ends may be datetimes or epoch ms)."""

    def moved(value: Any) -> Any:
        if isinstance(value, np.datetime64):
            return value + delta
        if isinstance(value, datetime):
            return value + pd.Timedelta(delta).to_pytimedelta()
        if isinstance(value, int | float):
            return value + float(delta / np.timedelta64(1, "ms"))
        return value

    rng.start, rng.end = moved(rng.start), moved(rng.end)


class Dashboard:
    """One browser session's view: read in full on load and on a change of what is shown,
    then kept current by the live feed's updates (see :meth:`live`)."""

    def __init__(self, reader: Reader) -> None:
        from models.categories import CATEGORIES, CATEGORY_LABELS

        self.reader = reader
        self.mode = pn.widgets.RadioButtonGroup(
            label="Mode", options=[LIVE, HISTORY], value=LIVE, color="success"
        )
        self.window = pn.widgets.RadioButtonGroup(
            label="Window", options=list(WINDOWS), value=DEFAULT_WINDOW, color="primary"
        )
        # History mode: the chosen range (read as UTC); live updates do not move it.
        self.picker = pn.widgets.DatetimeRangePicker(
            label="Range (UTC)", width=340, visible=False, allow_input=True
        )
        self.status = pn.pane.Markdown("Waiting for data…", sizing_mode="stretch_width")
        # bullish / neutral / bearish beside the price (text we write, never text from a feed)
        self.mood = pn.pane.HTML(mood_chip("no news", None), width=260)
        empty = windows_frame([])
        # the price and mean-sentiment chart (patched in place by live updates) ...
        self.pipe = hv.streams.Pipe(data=empty)
        # ... and the same windows for the sentiment-share bars (redrawn at most every HEAVY_S)
        self.share_pipe = hv.streams.Pipe(data=empty)
        self._sources: dict[str, LiveSource] = {}
        # framewise: each pushed frame sets the ranges (the first frame is empty).
        self.event_pipe = hv.streams.Pipe(data=event_spans([]))
        self.category_pipe = hv.streams.Pipe(data=categories_frame([]))
        self.river_pipe = hv.streams.Pipe(data=river_frame([], {}))
        self.source_pipe = hv.streams.Pipe(data=source_volume_frame([]))
        self.lag_pipe = hv.streams.Pipe(data=lead_lag(empty))
        # framewise: each pushed frame sets the ranges (the first frame is empty); "save" gives
        # every chart a PNG download in its toolbar.
        opts = {
            "responsive": True,
            "height": 210,
            "show_grid": True,
            "tools": ["hover", "save"],
            "framewise": True,
        }
        # The price (left axis) with the buckets' mean sentiment overlaid (right axis) and the
        # window's events shaded behind. Sentiment as points, not a line: a bucket without news
        # has no sentiment, and a line would invent one between its neighbours.
        # The hooks keep each session's Bokeh data sources of these two, which live updates patch.
        price = (
            hv.DynamicMap(
                lambda data: hv.Curve(data, "time", ("close", "BTC/USD close")).opts(
                    color="#f7931a", framewise=True, hooks=[self._keep("close")]
                ),
                streams=[self.pipe],
            )
            * hv.DynamicMap(
                lambda data: hv.Scatter(data, "time", ("sentiment_mean", "mean sentiment")).opts(
                    color="sentiment_mean",
                    cmap="RdYlGn",
                    clim=(-1, 1),
                    size=6,
                    ylim=(-1, 1),
                    framewise=True,
                    hooks=[self._keep("sentiment")],
                ),
                streams=[self.pipe],
            )
            * hv.DynamicMap(
                lambda data: hv.VSpans(data, kdims=["start", "end"]).opts(color="#e63946", alpha=0.15),
                streams=[self.event_pipe],
            )
            # framewise on the elements: on an overlay it does not reach them
        ).opts(multi_y=True, xaxis=None, **{**opts, "height": 280})
        volume = hv.DynamicMap(
            lambda data: stacked_bars(*data).opts(
                hv.opts.Rectangles(
                    xaxis=None, line_alpha=0, ylabel="articles", padding=(0, (0, 0.05)), **opts
                ),
                hv.opts.Overlay(legend_position="left"),
            ),
            streams=[self.source_pipe],
        )
        shares = hv.DynamicMap(
            lambda data: stacked_bars(
                share_bars_frame(data), list(SHARES), list(SHARES.values()), y="share"
            ).opts(
                hv.opts.Rectangles(
                    xaxis=None, line_alpha=0, ylabel="share of articles", padding=(0, (0, 0.05)), **opts
                ),
                hv.opts.Overlay(legend_position="left"),
            ),
            streams=[self.share_pipe],
        )
        river = hv.DynamicMap(
            lambda data: topic_river(*data).opts(
                hv.opts.Rectangles(
                    xaxis=None, line_alpha=0, ylabel="topic share", padding=(0, (0, 0.05)), **opts
                ),
                hv.opts.Overlay(legend_position="left"),
            ),
            streams=[self.river_pipe],
        )
        heatmap = hv.DynamicMap(
            lambda data: hv.HeatMap(data, ["time", "category"], "articles").opts(
                cmap="Blues", colorbar=True, **{**opts, "height": 250}
            ),
            streams=[self.category_pipe],
        )
        self.plots = pn.pane.HoloViews(
            (price + volume + shares + river + heatmap).cols(1).opts(shared_axes=True),
            sizing_mode="stretch_width",
        )
        # Sentiment vs price lead/lag: its own chart (its x axis is lags, not time).
        self.lag_plot = pn.pane.HoloViews(
            hv.DynamicMap(
                lambda data: (
                    hv.Bars(data, ("lag", "lag (buckets; > 0: sentiment leads)"), ("corr", "corr"))
                    .redim.range(corr=(-1, 1))
                    .opts(
                        color="#1d3557",
                        responsive=True,
                        height=220,
                        show_grid=True,
                        tools=["hover", "save"],
                        framewise=True,
                        hooks=[self._keep("lags")],
                    )
                ),
                streams=[self.lag_pipe],
            ),
            sizing_mode="stretch_width",
        )
        self.lag_caption = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._frame = empty
        self.download = pn.widgets.FileDownload(
            callback=lambda: io.StringIO(self._frame.to_csv(index=False)),
            filename="btcpulse-window.csv",
            label="Export window as CSV",
            color="light",
        )
        self.query = pn.widgets.TextInput(placeholder="Search similar news in this window…", width=420)
        self.results = _table(search_frame([]), 240)
        self.query.param.watch(lambda _e: pn.state.execute(self.search), "value")
        self._range: tuple[float, float] | None = None
        # News filters, applied by the store (SearchFilter) together with the chart's range.
        self.source = pn.widgets.Select(label="Source", options=[ALL], value=ALL, width=200)
        self.sentiment = pn.widgets.Select(label="Sentiment", options=SENTIMENTS, value=ALL, width=140)
        self.category = pn.widgets.Select(
            label="Category",
            options={"all": ALL, **{CATEGORY_LABELS.get(c, c): c for c in CATEGORIES}},
            value=ALL,
            width=220,
        )
        # topics by label (the topic model's ids), filled as topics appear
        self.topic = pn.widgets.Select(label="Topic", options={ALL: ALL}, value=ALL, width=260)
        self._sources_seen: set[str] = set()
        self.table = _table(
            news_frame([]), 360, selectable=1, widths={"title": 520}, hidden_columns=HIDDEN_NEWS_COLUMNS
        )
        self.table.on_click(self._clicked)
        # The clicked article: its nearest neighbours and its story's timeline.
        self._selected: tuple[str, str | None] | None = None
        self.detail = pn.pane.Markdown(
            "Click an article in the table to see similar articles and its story.",
            sizing_mode="stretch_width",
        )
        self.similar = _table(search_frame([]), 280)
        self.timeline = _table(news_frame([]), 280, hidden_columns=HIDDEN_NEWS_COLUMNS)
        self.sources = _table(sources_frame([]), 220)
        self.pipeline = _table(pipeline_frame([]), 120)
        self.events = _table(events_frame([]), 240)
        self.topics = _table(topics_frame([], {}), 240)
        self._topic_labels: dict[int, str] = {}
        self._sent: dict[str, Any] = {}  # what each pipe was last sent (a frame, or a tuple)
        # What is on screen: the range's windows (every bucket, oldest first), its step, the
        # totals and the news table's rows; live updates change these in place.
        self._windows: list[Any] = []
        self._step = 0
        self._totals: Any = None
        self._news = news_frame([])
        self._lock = asyncio.Lock()  # one read-and-update at a time (full refresh or live)
        self._last_read = 0.0  # monotonic time of the last read (full or live)
        self._last_context = -math.inf  # ... of the last read of sources, events, topics, pipeline
        self._last_heavy = -math.inf  # ... of the last redraw of the aggregate charts
        self._heavy_queued = self._context_queued = self._fast_queued = False
        self._redraw_due = False  # a new range: the next fast draw redraws the price chart
        self._events_due = False
        # How a change reaches the page: ``call(fn, delay_s)`` runs ``fn`` with the session's
        # document lock (Bokeh sends what it changed right after); ``spawn(coroutine function)``
        # runs I/O without the lock. Without a session (tests), both run at once.
        self.call: Callable[[Callable[[], None], float], None] = lambda fn, _delay: fn()
        self.pending: Callable[[], bool] | None = None  # live updates wait for this session
        self.spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], None] | None = None
        for widget in (self.source, self.sentiment, self.category, self.topic):
            widget.param.watch(lambda _e: pn.state.execute(self.refresh), "value")
        # the window buttons act in Live mode, the range picker in History mode
        self.window.param.watch(lambda _e: self._refresh_in(LIVE), "value")
        self.picker.param.watch(lambda _e: self._refresh_in(HISTORY), "value")
        self.mode.param.watch(self._mode_changed, "value")
        # Bootstrap rather than Fast: Fast's theme imports a Google font, and the dashboard
        # must make no request outside the machine that serves it.
        self.layout = pn.template.BootstrapTemplate(
            title="btcpulse — Bitcoin news vs price",
            header_background="#1d3557",
            main=[
                pn.Row(self.mode, self.window, self.picker, self.download, sizing_mode="stretch_width"),
                pn.Row(self.mood, self.status, sizing_mode="stretch_width"),
                self.plots,
                pn.pane.Markdown("### Does sentiment lead the price?"),
                self.lag_caption,
                self.lag_plot,
                pn.Row(pn.pane.Markdown("### Search"), self.query, sizing_mode="stretch_width"),
                self.results,
                pn.pane.Markdown("### Latest scored news"),
                pn.Row(self.source, self.sentiment, self.category, self.topic),
                self.table,
                self.detail,
                pn.Row(
                    pn.Column(pn.pane.Markdown("### Similar articles"), self.similar),
                    pn.Column(pn.pane.Markdown("### Its story, oldest first"), self.timeline),
                    sizing_mode="stretch_width",
                ),
                pn.Row(
                    pn.Column(pn.pane.Markdown("### Events in the window"), self.events),
                    pn.Column(pn.pane.Markdown("### Topics in the window"), self.topics),
                    sizing_mode="stretch_width",
                ),
                pn.pane.Markdown("### Live sources"),
                self.sources,
                pn.pane.Markdown("### Pipeline"),
                self.pipeline,
            ],
        )

    def _mode_changed(self, event: Any) -> None:
        history = event.new == HISTORY
        self.picker.visible, self.window.visible = history, not history
        if history and self.picker.value is None and self._range is not None:
            # start from the range on screen (setting it refreshes)
            start, end = (datetime.fromtimestamp(t, UTC).replace(tzinfo=None) for t in self._range)
            self.picker.value = (start, end)
        else:
            pn.state.execute(self.refresh)

    def _refresh_in(self, mode: str) -> None:
        if self.mode.value == mode:
            pn.state.execute(self.refresh)

    def _span(self, last_ts: float | None) -> tuple[float, float, int]:
        """(start, end, step) of the charts: the picked range in History mode, else the live
        window ending at the newest data."""
        if self.mode.value == HISTORY and self.picker.value:
            return history_range(*self.picker.value)
        span, step = WINDOWS[self.window.value]
        end = (last_ts + 1) if last_ts is not None else datetime.now(UTC).timestamp()
        end = (int(end // step) + 1) * step
        return end - span, end, step

    def _filter(self, start: float | None = None, end: float | None = None, **extra: Any) -> Any:
        from cluster.vectors import SearchFilter

        def chosen(widget: pn.widgets.Select) -> Any:
            return None if widget.value == ALL else widget.value

        return SearchFilter(
            start_ts=start,
            end_ts=end,
            source=chosen(self.source),
            sentiment_label=chosen(self.sentiment),
            category=chosen(self.category),
            topic_id=None if self.topic.value == ALL else int(self.topic.value),
            **extra,
        )

    def _clicked(self, event: Any) -> None:
        frame = self.table.value
        if event.row is None or not 0 <= event.row < len(frame):
            return
        row = frame.iloc[event.row]
        story = row.get("story_id")
        self._selected = (str(row["id"]), str(story) if pd.notna(story) and story else None)
        pn.state.execute(self.show_selected)

    async def show_selected(self) -> None:
        """Similar articles (k=10, within the chart's range) and the story's timeline."""
        from cluster.vectors import SearchFilter

        if self._selected is None:
            return
        article, story = self._selected
        start, end = self._range or (None, None)
        try:
            hits = await self.reader.similar(article, 10, SearchFilter(start_ts=start, end_ts=end))
            rows = await self.reader.timeline(story, 50) if story else []
        except Exception as exc:
            log.warning("similar articles or story unavailable: %s", exc)
            self.detail.object = f"**Similar articles unavailable** ({type(exc).__name__})"
            return
        self.similar.value = search_frame(hits or [])
        self.timeline.value = news_frame(rows)
        found = "not in the vector store" if hits is None else f"{len(hits)} similar in the chart's range"
        story_text = f"its story has {len(rows)} article(s)" if story else "it belongs to no story"
        self.detail.object = f"**Selected article:** {found}; {story_text}."

    async def search(self) -> None:
        """Similar news for the search box, within the window on screen."""
        from cluster.vectors import SearchFilter

        text = (self.query.value or "").strip()[:500]
        if not text:
            self.results.value = search_frame([])
            return
        start, end = self._range or (None, None)
        try:
            hits = await self.reader.search(text, 20, SearchFilter(start_ts=start, end_ts=end))
        except Exception as exc:
            log.warning("search failed: %s", exc)
            return
        self.results.value = search_frame(hits)

    def _changed(self, name: str, data: Any) -> bool:
        previous = self._sent.get(name)
        return not (
            previous.equals(data)
            if isinstance(data, pd.DataFrame) and isinstance(previous, pd.DataFrame)
            else isinstance(data, tuple) and isinstance(previous, tuple) and _same(previous, data)
        )

    def _send(self, name: str, pipe: hv.streams.Pipe, data: Any) -> None:
        """Push only what changed: an unchanged frame would reset a zoom for nothing."""
        if self._changed(name, data):
            self._sent[name] = data
            pipe.send(data)

    def _keep(self, name: str) -> Callable[[Any, Any], None]:
        """A HoloViews hook that keeps the element's Bokeh data source and ranges (called when
        the plot is made and after each update it draws)."""

        def hook(plot: Any, _element: Any) -> None:
            h = plot.handles
            self._sources[name] = LiveSource(h["source"], h.get("x_range"), h.get("y_range"))

        return hook

    # -- reads ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the whole range on screen and redraw: on load, when the window, mode, range
        or a filter changes, when live updates were lost, and FALLBACK_S after the last read."""
        self._last_read = time.monotonic()  # also when it fails: retried after FALLBACK_S
        async with self._lock:
            try:
                totals = await self.reader.totals()
                start, end, step = self._span(totals.last_ts)
                windows = await self.reader.series(start, end, step)
                latest = await self.reader.latest(NEWS_LIMIT, self._filter(start, end))
            except Exception as exc:  # keep the session alive; show what is wrong
                log.warning("dashboard refresh failed: %s", exc)
                self.call(functools.partial(self._show_error, exc), 0)
                return
            moved = (start, end) != self._range or step != self._step
            # Drawn through HoloViews by the next fast draw, whichever it is: one a live update
            # queued before this read draws this new range (its patch would only shift the axis).
            self._redraw_due |= moved
            self._totals, self._windows, self._range, self._step = totals, windows, (start, end), step
            self._frame = windows_frame(windows)
            self._news = news_frame(latest)
            self._sources_seen |= {str(r["source"]) for r in latest if r.get("source")}
        self.call(self._draw_fast, 0)
        self._heavy_due(now=True)
        if moved or time.monotonic() - self._last_context >= CONTEXT_S:
            await self.read_context()

    async def live(self, updates: list[Any]) -> None:
        """Apply what the live feed says was written, without re-reading the range: a new
        article goes into the news table as it came (no read at all); a written window re-reads
        only its bucket (and the totals), which is patched into the price and sentiment chart
        and the status line at once. The aggregate charts follow at most every HEAVY_S."""
        articles = [u.data for u in updates if u.kind == "article"]
        minutes = [to_ts(u.data["start"]) for u in updates if u.kind == "aggregate" and u.data.get("start")]
        self._events_due |= any(u.kind == "event" for u in updates)
        async with self._lock:
            if self._range is None:  # not loaded yet: the first refresh reads it all
                return
            before = self._range
            try:
                current = not minutes or await self._read_buckets(minutes)
            except Exception as exc:
                log.warning("dashboard live update failed: %s", exc)
                self.call(functools.partial(self._show_error, exc), 0)
                return
            if current:
                self._merge_news(articles)
                if self._range != before:  # the live window moved: the table keeps what is in it
                    self._news = self._news[_times(self._news["published_at"]) >= self._range[0]]
        if not current:  # the window, mode or range was changed meanwhile: read it all
            await self.refresh()
            return
        self._queue_fast()
        if minutes or self._events_due:
            self._heavy_due()
        if self._range != before or time.monotonic() - self._last_context >= CONTEXT_S:
            self._context_due()

    async def _read_buckets(self, minutes: list[float]) -> bool:
        """Totals, then the buckets of the range that hold a written minute or are new (the
        live window moved); the other buckets are kept as read. False, reading nothing more,
        when the span on screen is no longer the one chosen (a full refresh is due)."""
        totals = await self.reader.totals()
        start, end, step = self._span(totals.last_ts)
        if self._range is None or step != self._step or end - start != self._range[1] - self._range[0]:
            return False
        if self.mode.value == HISTORY and (start, end) != self._range:
            return False
        first = int(start // step) * step
        wanted = [first + i * step for i in range(int((end - first + step - 1) // step))]
        have = {to_ts(w.start): w for w in self._windows}
        need = {b for b in wanted if b not in have}
        need |= {int(m // step) * step for m in minutes if first <= m < wanted[-1] + step}
        if need:
            fetched = await self.reader.series(min(need), max(need) + step, step)
            have.update((to_ts(w.start), w) for w in fetched)
        self._windows = [have.get(b) or _empty_window(b, step) for b in wanted]
        self._totals, self._range = totals, (start, end)
        self._frame = windows_frame(self._windows)
        self._last_read = time.monotonic()
        return True

    def _merge_news(self, rows: list[dict[str, Any]]) -> None:
        """Live articles that pass the filters and fall in the range into the table's rows."""
        if not rows:
            return
        self._sources_seen |= {str(r["source"]) for r in rows if r.get("source")}
        assert self._range is not None
        start, end = self._range
        # Live: a newer article is in the window (the window moves to it once it is counted).
        flt = self._filter(start, end if self.mode.value == HISTORY else None)
        shown = [r for r in rows if row_matches(r, flt)]
        if shown:
            self._news = merge_news(self._news, shown, NEWS_LIMIT)

    async def read_context(self) -> None:
        """What changes on the scale of minutes: source health, the range's events, topic
        labels, the sources the filter offers, and pipeline health."""
        self._last_context = time.monotonic()
        if self._range is None:
            return
        start, end = self._range
        sources = events = labels = pipeline = None
        seen: set[str] = set()
        try:
            sources = sources_frame(await self.reader.sources())
            events = await self.reader.events(start, end, 20)
            self._events_due = False
            labels = {int(t["id"]): str(t["label"]) for t in await self.reader.topics()}
            seen = {str(r["source"]) for r in await self.reader.latest(200, None) if r.get("source")}
        except Exception as exc:
            log.warning("source health, events or topics unavailable: %s", exc)
        try:
            pipeline = pipeline_frame(await self.reader.pipeline())
        except Exception as exc:
            log.warning("pipeline health unavailable: %s", exc)
        self._sources_seen |= seen
        relabelled = labels is not None and labels != self._topic_labels
        if labels is not None:
            self._topic_labels = labels

        def draw() -> None:
            if sources is not None:
                _set_table(self.sources, sources)
            if events is not None:
                self._draw_events(events, (start, end))
            if pipeline is not None:
                _set_table(self.pipeline, pipeline)
            if labels is not None:
                ordered = sorted(labels.items())
                topics = {ALL: ALL, **{f"{t}: {label}"[:80]: t for t, label in ordered}}
                if topics != self.topic.options:
                    self.topic.options = topics
            self._draw_source_options()

        self.call(draw, 0)
        if relabelled:  # the river and the topics table name topics by label
            self._heavy_due()

    async def _read_events(self) -> None:
        if self._range is None:
            return
        self._events_due = False
        asked = self._range
        try:
            events = await self.reader.events(*asked, 20)
        except Exception as exc:
            log.warning("events unavailable: %s", exc)
            return
        self.call(lambda: self._draw_events(events, asked), 0)

    # -- what runs when ----------------------------------------------------------------
    def _queue_fast(self) -> None:
        if not self._fast_queued:
            self._fast_queued = True
            self.call(self._draw_fast, 0)

    def _heavy_due(self, now: bool = False) -> None:
        """Redraw the aggregate charts from the windows in memory: ``now`` (a new range); else
        right after this live update's own draw when HEAVY_S have passed since the last
        redraw, or once they have, at a moment no live update is on its way (a redraw costs
        the session's event loop a few tenths of a second: it must not delay the next one)."""
        if now:
            self.call(self._redraw_heavy, 0)
            return
        wait = self._last_heavy + HEAVY_S - time.monotonic()
        if wait <= 0:
            self._last_heavy = time.monotonic()  # one redraw for the updates of this moment
            self.call(self._redraw_heavy, 0)  # queued behind the update's draw
            return
        if self._heavy_queued:
            return
        self._heavy_queued = True

        def later(tries: int = 0) -> None:
            self._heavy_queued = False
            if self._busy() and tries < BUSY_RETRIES:  # try again once that update is drawn
                self._heavy_queued = True
                self.call(lambda: later(tries + 1), BUSY_RETRY_S)
            else:
                self._redraw_heavy()

        self.call(later, wait)

    def _busy(self) -> bool:
        """Whether a live update is being read or drawn, or waits to be."""
        return self._lock.locked() or self._fast_queued or (self.pending is not None and self.pending())

    def _redraw_heavy(self) -> None:
        if self._events_due and self.spawn is not None:
            self.spawn(self._read_events)
        self._last_heavy = time.monotonic()
        self._draw_heavy()

    def _context_due(self) -> None:
        if self._context_queued or self.spawn is None:
            return
        self._context_queued = True

        async def run() -> None:
            try:
                await self.read_context()
            finally:
                self._context_queued = False

        self.spawn(run)

    def idle_s(self) -> float:
        """Seconds since the last read (full or live)."""
        return time.monotonic() - self._last_read

    # -- drawing (with the document lock) -----------------------------------------------
    def _show_error(self, exc: Exception) -> None:
        self.status.object = f"**Data unavailable** ({type(exc).__name__}); retrying…"

    def _draw_fast(self) -> None:
        """The price and sentiment chart, the news table, the status line and the mood: patched
        into the page's data, or, for a new range, drawn through HoloViews (axes included)."""
        self._fast_queued = False
        if self._range is None:
            return
        frame = self._frame
        if self._redraw_due:
            self._redraw_due = False
            self._sent["series"] = frame
            self.pipe.send(frame)
        elif not self._patch_price(frame):
            self._send("series", self.pipe, frame)
        if self.table.value is not self._news:
            self.table.value = self._news
        self._draw_source_options()
        self.mood.object = mood_chip(*mood(frame))
        self.status.object = self._status_text()

    def _patch_price(self, frame: pd.DataFrame) -> bool:
        """Put ``frame`` into the price and mean-sentiment data sources as Bokeh patches and
        streams (rollover: the live window's first buckets leave as new ones come); False when
        the chart is not drawn yet or its data has other columns (then HoloViews redraws)."""
        close, sentiment = self._sources.get("close"), self._sources.get("sentiment")
        if close is None or sentiment is None:
            return False
        times = frame["time"].to_numpy()
        prices = frame["close"].to_numpy(dtype="float64")
        means = frame["sentiment_mean"].to_numpy(dtype="float64")
        columns = {"close": {"time": times, "close": prices},
                   "sentiment": {"time": times, "sentiment_mean": means, "color": means}}  # fmt: skip
        if any(set(self._sources[name].source.data) != set(columns[name]) for name in columns):
            return False
        y = padded_extent(prices)
        if y is None and np.isfinite(prices).any():
            return False  # one price: HoloViews pads it its own way
        before = _first_time(close.source)
        for name, data in columns.items():
            sync_source(self._sources[name].source, data)
        after = _first_time(close.source)
        if close.x_range is not None and before is not None and after is not None and after != before:
            _shift_range(close.x_range, after - before)  # the live window moved
        if close.y_range is not None and y is not None and (close.y_range.start, close.y_range.end) != y:
            close.y_range.start, close.y_range.end = y
        self._sent["series"] = frame
        self.pipe.update(data=frame)  # what HoloViews would draw next (no redraw)
        return True

    def _draw_events(self, found: list[Any], asked: tuple[float, float]) -> None:
        """The events read for the range ``asked``: not drawn where the range on screen has
        changed since (the read that the change started draws its own)."""
        if asked != self._range:
            self._events_due = True
            return
        _set_table(self.events, events_frame(found))
        self._send("events", self.event_pipe, event_spans(found))

    def _draw_source_options(self) -> None:
        options = [ALL, *sorted(self._sources_seen)]
        if options != self.source.options:
            self.source.options = options

    def _draw_heavy(self) -> None:
        """The aggregate charts and tables, one chart per tick of the session: each HoloViews
        update costs a walk of the whole document (~0.1 s here), and a live update that comes
        meanwhile is drawn between two of them. Each chart is drawn from the windows on screen
        when its turn comes, not those of the moment the redraw began: the charts share the
        price chart's time axis, which HoloViews widens to take in each update of a chart but
        the first, so a chart drawn with the windows of a range left meanwhile (the live window,
        when a history range was picked) stretched the axis over both."""
        lags = lead_lag(self._frame)
        if self._changed("lags", lags):
            self._patch_lags(lags)  # in place when it can; else the bars are redrawn below
        steps: list[Callable[[], None]] = [
            lambda: self._send("shares", self.share_pipe, self._frame),
            lambda: self._send("categories", self.category_pipe, categories_frame(self._windows)),
            lambda: self._send("river", self.river_pipe, river_frame(self._windows, self._topic_labels)),
            lambda: self._send("sources", self.source_pipe, source_volume_frame(self._windows)),
            self._draw_lags,
            lambda: self._draw_tables(self._windows, self._frame, lead_lag(self._frame)),
        ]

        def run(i: int, tries: int = 0) -> None:
            if self._busy() and tries < BUSY_RETRIES:  # a live update first, but not for ever
                self.call(lambda: run(i, tries + 1), BUSY_RETRY_S)
                return
            steps[i]()
            if i + 1 < len(steps):
                self.call(lambda: run(i + 1), 0)

        run(0)

    def _draw_lags(self) -> None:
        lags = lead_lag(self._frame)
        if self._changed("lags", lags) and not self._patch_lags(lags):
            self._send("lags", self.lag_pipe, lags)

    def _patch_lags(self, lags: pd.DataFrame) -> bool:
        """The lead/lag bars (always the same lags, on a fixed -1..1 axis) patched in place."""
        bars = self._sources.get("lags")
        data = {"lag": lags["lag"].to_numpy(), "corr": lags["corr"].to_numpy(dtype="float64")}
        if bars is None or set(bars.source.data) != set(data):
            return False
        sync_source(bars.source, data, key="lag")
        self._sent["lags"] = lags
        self.lag_pipe.update(data=lags)
        return True

    def _draw_tables(self, windows: list[Any], frame: pd.DataFrame, lags: pd.DataFrame) -> None:
        _set_table(self.topics, topics_frame(windows, self._topic_labels))
        if self._range is None:
            return
        shown = " – ".join(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") for t in self._range)
        n = int(lags.loc[lags["lag"] == 0, "n"].sum())
        self.lag_caption.object = (
            f"Correlation of each bucket's mean sentiment with the BTC return {MAX_LAG} buckets before "
            f"to {MAX_LAG} after it (lag > 0: sentiment first), over {shown} UTC in "
            f"{_step_label(self._step)} buckets; {n} of {len(frame)} buckets had both a sentiment and a "
            "return. Correlation, not causation."
        )

    def _status_text(self) -> str:
        assert self._range is not None
        totals = self._totals
        last = (
            datetime.fromtimestamp(totals.last_ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
            if totals.last_ts
            else "—"
        )
        shown = " – ".join(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") for t in self._range)
        mode = f"history {shown} UTC" if self.mode.value == HISTORY else f"live {self.window.value}"
        return (
            f"**{totals.articles:,}** articles · **{totals.prices:,}** price points · "
            f"newest data {last} · {mode} · {_step_label(self._step)} buckets"
        )


MOOD_COLORS = {"bullish": "#2a9d8f", "neutral": "#6c757d", "bearish": "#d62828", "no news": "#adb5bd"}


def mood_chip(label: str, score: float | None) -> str:
    """The mood as a coloured chip: label and the score it comes from."""
    shown = "" if score is None else f" {score:+.2f}"
    return (
        f'<span class="btcpulse-mood" style="background:{MOOD_COLORS[label]};color:white;'
        f'padding:4px 10px;border-radius:12px;font-weight:600">News mood: {label}{shown}</span>'
    )


def _table(frame: pd.DataFrame, height: int, **extra: Any) -> pn.widgets.Tabulator:
    """A read-only table; a ``url`` column shows as an "open" link (a new tab)."""
    links = {"url": {"type": "link", "target": "_blank", "label": "open"}} if "url" in frame else {}
    return pn.widgets.Tabulator(
        frame,
        show_index=False,
        disabled=True,
        sizing_mode="stretch_width",
        height=height,
        formatters=links,
        **extra,
    )


def _set_table(table: pn.widgets.Tabulator, frame: pd.DataFrame) -> None:
    """A table's rows, sent only when they changed (a DataFrame is always news to Panel)."""
    if not (isinstance(table.value, pd.DataFrame) and table.value.equals(frame)):
        table.value = frame


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(
        x.equals(y) if isinstance(x, pd.DataFrame) and isinstance(y, pd.DataFrame) else x == y
        for x, y in zip(a, b, strict=True)
    )


def topic_river(frame: pd.DataFrame, labels: list[str]) -> hv.Overlay:
    """The top topics' shares of each bucket stacked as bars, one colour and legend entry per
    topic (its keyword label); a bucket without news has no bar."""
    return stacked_bars(river_bars_frame(frame, labels), labels, y="topic_share")


def river_bars_frame(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """The river's wide frame (time, t0, t1, ...) as stacked rectangles (layer: the label)."""
    times = frame["time"]
    width = times.iloc[1] - times.iloc[0] if len(frame) >= 2 else pd.Timedelta(minutes=1)
    rows: list[dict[str, Any]] = []
    for i in range(len(frame)):
        start = pd.Timestamp(times.iloc[i])
        layers = [(label, float(frame[f"t{k}"].iloc[i])) for k, label in enumerate(labels)]
        rows += _stack(start, start + width, layers)
    return _bars(rows)


def search_frame(hits: list[Any]) -> pd.DataFrame:
    rows = [
        {
            "score": round(float(h.score), 3),
            "published_at": h.payload.get("published_at"),
            "source": h.payload.get("source"),
            "sentiment_label": h.payload.get("sentiment_label"),
            "title": h.payload.get("title"),
            "url": h.payload.get("url"),
        }
        for h in hits
    ]
    return pd.DataFrame(rows, columns=SEARCH_COLUMNS)


def stacked_bars(
    frame: pd.DataFrame, order: list[str], colors: list[str] | None = None, y: str = "articles"
) -> hv.Overlay:
    """Rectangles (time, y0, time_end, y1, layer) as stacked bars: one colour and legend entry
    per layer, in ``order``. ``y`` names the y axis (charts whose y dimensions share a name
    share their y range)."""
    palette = colors or hv.Cycle("Category10").values
    data = frame.rename(columns={"y0": y, "y1": f"{y}_top"})
    dims = ["time", y, "time_end", f"{y}_top"]
    bars = [
        hv.Rectangles(data[data["layer"] == layer], dims, label=layer).opts(color=palette[i % len(palette)])
        for i, layer in enumerate(order)
    ]
    if not bars:  # no news yet: an empty layer keeps the axis
        bars = [hv.Rectangles(data, dims)]
    return hv.Overlay(bars)


def create_dashboard(reader: Reader) -> pn.template.BootstrapTemplate:
    """Build one session's dashboard: read in full on load, then woken by the live feed for
    each written article, window or event (no polling)."""
    from bokeh.document.locking import without_document_lock
    from panel.io.state import set_curdoc

    from serve.live import KINDS, StreamFilter

    dash = Dashboard(reader)
    doc = pn.state.curdoc
    woken = [False]  # a wake-up is scheduled and has not drained the queue yet
    if doc is not None and doc.session_context is not None:

        def call(fn: Callable[[], None], delay_s: float) -> None:
            # Bokeh runs it with the document lock, then sends the changes it made.
            if delay_s > 0:
                doc.add_timeout_callback(fn, max(1, round(delay_s * 1000)))
            else:
                doc.add_next_tick_callback(fn)

        def spawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
            @without_document_lock
            async def run() -> None:
                with set_curdoc(doc):
                    try:
                        await fn()
                    except Exception:
                        log.exception("dashboard update failed")

            doc.add_next_tick_callback(run)  # type: ignore[arg-type]  # coroutines are supported

        dash.call, dash.spawn = call, spawn
        dash.pending = lambda: woken[0]

    dropped = [0]

    def go(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if dash.spawn is not None:
            dash.spawn(fn)
        else:
            pn.state.execute(fn)

    async def apply() -> None:
        woken[0] = False
        updates = sub.drain()
        if updates:
            await dash.live(updates)

    def wake() -> None:  # on the event loop, from the live feed: schedule, never wait
        if dash.spawn is not None and not woken[0]:
            woken[0] = True
            dash.spawn(apply)

    sub = reader.live().subscribe(StreamFilter(frozenset(KINDS)), maxsize=LIVE_QUEUE, wake=wake)

    def tick() -> None:
        if sub.dropped != dropped[0]:  # updates were lost: read it all
            dropped[0] = sub.dropped
            sub.drain()
            go(dash.refresh)
        elif not woken[0]:  # no wake-up could be scheduled (no session document)
            go(apply)
        if dash.idle_s() >= FALLBACK_S:
            go(dash.refresh)

    pn.state.onload(lambda: pn.state.execute(dash.refresh))
    pn.state.add_periodic_callback(tick, period=TICK_MS)
    pn.state.on_session_destroyed(lambda _ctx: sub.close())
    return dash.layout

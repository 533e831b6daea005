"""The live dashboard: price, mean sentiment and article volume on one time axis, the
latest scored news with their categories and topics, the events and topics of the window.

    live feed (serve layer)    -> a scored article or an aggregate was written: wake up
    ReadService (serve layer)  -> series windows + latest articles, read on wake-up (and every
                                  FALLBACK_S, so the sources' health and a quiet window refresh)
      -> hv.streams.Pipe       DataFrames pushed into DynamicMaps (only the data changes)
      -> Bokeh session         price / sentiment / volume linked on x; news table

Updates are pushed, not polled: the session's tick only looks at its own queue (no I/O) and
reads the stores when something new was written, so an idle dashboard costs nothing and many
tabs share the replica's one set of Pulsar readers.

In Live mode the window ends at the newest data (for a replay, the replayed "now") and
moves as data arrives; in History mode it is the range picked (UTC), its bucket step follows
its span, and live updates do not move it. The news table is filtered (source, sentiment,
category) and restricted to the charts' range; a click on an article shows its nearest
neighbours and its story's timeline. Below the time-linked charts (with a river of the top
topics' shares), a lead/lag chart correlates bucket sentiment with later price returns.
Text from the internet is shown as text, never as HTML.
"""

from __future__ import annotations

import io
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import holoviews as hv
import pandas as pd
import panel as pn

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
WAKE_MS = 200  # how often a session looks at its queue of live updates (local, no I/O)
FALLBACK_S = 15.0  # refresh at least this often even when nothing was written
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
# Source health changes on the scale of poll intervals; refresh it every few ticks only.
SOURCES_EVERY = 5
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
    def drain(self) -> list[Any]: ...
    def close(self) -> None: ...


class Live(Protocol):
    def subscribe(self, flt: Any = None, maxsize: int = ...) -> Subscription: ...


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


class Dashboard:
    """One browser session's view; refreshed by a periodic callback of that session."""

    def __init__(self, reader: Reader) -> None:
        from models.categories import CATEGORIES, CATEGORY_LABELS

        self.reader = reader
        self.mode = pn.widgets.RadioButtonGroup(
            name="Mode", options=[LIVE, HISTORY], value=LIVE, button_type="success"
        )
        self.window = pn.widgets.RadioButtonGroup(
            name="Window", options=list(WINDOWS), value=DEFAULT_WINDOW, button_type="primary"
        )
        # History mode: the chosen range (read as UTC); live updates do not move it.
        self.picker = pn.widgets.DatetimeRangePicker(
            name="Range (UTC)", width=340, visible=False, allow_input=True
        )
        self.status = pn.pane.Markdown("Waiting for data…", sizing_mode="stretch_width")
        # bullish / neutral / bearish beside the price (text we write, never text from a feed)
        self.mood = pn.pane.HTML(mood_chip("no news", None), width=260)
        empty = windows_frame([])
        self.pipe = hv.streams.Pipe(data=empty)
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
        price = (
            hv.DynamicMap(
                lambda data: hv.Curve(data, "time", ("close", "BTC/USD close")).opts(
                    color="#f7931a", framewise=True
                ),
                streams=[self.pipe],
            )
            * hv.DynamicMap(
                lambda data: hv.Scatter(data, "time", ("sentiment_mean", "mean sentiment")).opts(
                    color="sentiment_mean", cmap="RdYlGn", clim=(-1, 1), size=6, ylim=(-1, 1), framewise=True
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
            streams=[self.pipe],
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
            button_type="light",
        )
        self.query = pn.widgets.TextInput(placeholder="Search similar news in this window…", width=420)
        self.results = _table(search_frame([]), 240)
        self.query.param.watch(lambda _e: pn.state.execute(self.search), "value")
        self._range: tuple[float, float] | None = None
        # News filters, applied by the store (SearchFilter) together with the chart's range.
        self.source = pn.widgets.Select(name="Source", options=[ALL], value=ALL, width=200)
        self.sentiment = pn.widgets.Select(name="Sentiment", options=SENTIMENTS, value=ALL, width=140)
        self.category = pn.widgets.Select(
            name="Category",
            options={"all": ALL, **{CATEGORY_LABELS.get(c, c): c for c in CATEGORIES}},
            value=ALL,
            width=220,
        )
        # topics by label (the topic model's ids), filled as topics appear
        self.topic = pn.widgets.Select(name="Topic", options={ALL: ALL}, value=ALL, width=260)
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
        self._sent: dict[str, pd.DataFrame] = {}
        self._ticks = 0
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

    def _send(self, name: str, pipe: hv.streams.Pipe, data: Any) -> None:
        """Push only what changed: an unchanged frame would reset a zoom for nothing."""
        previous = self._sent.get(name)
        same = (
            previous.equals(data)
            if isinstance(data, pd.DataFrame) and isinstance(previous, pd.DataFrame)
            else isinstance(data, tuple) and isinstance(previous, tuple) and _same(previous, data)
        )
        if not same:
            self._sent[name] = data
            pipe.send(data)

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

    async def refresh(self) -> None:
        try:
            totals = await self.reader.totals()
            start, end, step = self._span(totals.last_ts)
            windows = await self.reader.series(start, end, step)
            latest = await self.reader.latest(50, self._filter(start, end))
        except Exception as exc:  # keep the session alive; show what is wrong
            log.warning("dashboard refresh failed: %s", exc)
            self.status.object = f"**Data unavailable** ({type(exc).__name__}); retrying…"
            return
        if self._ticks % SOURCES_EVERY == 0 or (start, end) != self._range:
            try:
                self.sources.value = sources_frame(await self.reader.sources())
                found = await self.reader.events(start, end, 20)
                self.events.value = events_frame(found)
                self._send("events", self.event_pipe, event_spans(found))
                self._topic_labels = {int(t["id"]): str(t["label"]) for t in await self.reader.topics()}
                labels = sorted(self._topic_labels.items())
                topics = {ALL: ALL, **{f"{t}: {label}"[:80]: t for t, label in labels}}
                if topics != self.topic.options:
                    self.topic.options = topics
                # the source filter's choices: sources seen in the range
                self._sources_seen |= {
                    str(r["source"]) for r in await self.reader.latest(200, None) if r.get("source")
                }
            except Exception as exc:
                log.warning("source health, events or topics unavailable: %s", exc)
            try:
                self.pipeline.value = pipeline_frame(await self.reader.pipeline())
            except Exception as exc:
                log.warning("pipeline health unavailable: %s", exc)
        self._ticks += 1
        self._sources_seen |= {str(r["source"]) for r in latest if r.get("source")}
        options = [ALL, *sorted(self._sources_seen)]
        if options != self.source.options:
            self.source.options = options
        frame = windows_frame(windows)
        self._frame, self._range = frame, (start, end)
        self._send("series", self.pipe, frame)
        self._send("categories", self.category_pipe, categories_frame(windows))
        self._send("river", self.river_pipe, river_frame(windows, self._topic_labels))
        self._send("sources", self.source_pipe, source_volume_frame(windows))
        self.mood.object = mood_chip(*mood(frame))
        lags = lead_lag(frame)
        self._send("lags", self.lag_pipe, lags)
        self.table.value = news_frame(latest)
        self.topics.value = topics_frame(windows, self._topic_labels)
        last = (
            datetime.fromtimestamp(totals.last_ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
            if totals.last_ts
            else "—"
        )
        shown = " – ".join(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") for t in (start, end))
        mode = f"history {shown} UTC" if self.mode.value == HISTORY else f"live {self.window.value}"
        self.status.object = (
            f"**{totals.articles:,}** articles · **{totals.prices:,}** price points · "
            f"newest data {last} · {mode} · {_step_label(step)} buckets"
        )
        n = int(lags.loc[lags["lag"] == 0, "n"].sum())
        self.lag_caption.object = (
            f"Correlation of each bucket's mean sentiment with the BTC return {MAX_LAG} buckets before "
            f"to {MAX_LAG} after it (lag > 0: sentiment first), over {shown} UTC in "
            f"{_step_label(step)} buckets; {n} of {len(frame)} buckets had both a sentiment and a return. "
            "Correlation, not causation."
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
    """Build one session's dashboard: refreshed when the live feed says data was written."""
    from serve.live import StreamFilter

    dash = Dashboard(reader)
    sub = reader.live().subscribe(StreamFilter(frozenset({"article", "aggregate"})), maxsize=100)
    last = [0.0]

    async def tick() -> None:
        now = time.monotonic()
        if sub.drain() or now - last[0] >= FALLBACK_S:
            last[0] = now
            await dash.refresh()

    pn.state.onload(lambda: pn.state.execute(dash.refresh))
    pn.state.add_periodic_callback(tick, period=WAKE_MS)  # type: ignore[arg-type]  # async is supported
    pn.state.on_session_destroyed(lambda _ctx: sub.close())
    return dash.layout

"""The live dashboard: price, mean sentiment and article volume on one time axis, and the
latest scored news.

    ReadService (serve layer)  -> series windows + latest articles, every second
      -> hv.streams.Pipe       DataFrames pushed into DynamicMaps (only the data changes)
      -> Bokeh session         price / sentiment / volume linked on x; news table

The window is live: it ends at the newest data (for a replay, the replayed "now") and
moves as data arrives. Text from the internet is shown as text, never as HTML.
"""

from __future__ import annotations

import logging
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
REFRESH_MS = 1000
SERIES_COLUMNS = ["time", "count", "sentiment_mean", "positive", "neutral", "negative", "close"]
NEWS_COLUMNS = ["published_at", "source", "sentiment_label", "sentiment", "title", "url"]
SOURCE_COLUMNS = ["name", "kind", "state", "new", "duplicates", "rejected", "errors", "last_success_at",
                  "next_poll_at", "last_error"]  # fmt: skip
# Source health changes on the scale of poll intervals; refresh it every few ticks only.
SOURCES_EVERY = 5


class Reader(Protocol):
    async def series(self, start: float, end: float, step_s: int) -> list[Any]: ...
    async def latest(self, limit: int, flt: Any = None) -> list[dict[str, Any]]: ...
    async def sources(self) -> list[dict[str, Any]]: ...
    async def totals(self) -> Any: ...


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
    frame = pd.DataFrame([{c: r.get(c) for c in NEWS_COLUMNS} for r in rows], columns=NEWS_COLUMNS)
    frame["sentiment"] = frame["sentiment"].astype("float64").round(3)
    return frame


class Dashboard:
    """One browser session's view; refreshed by a periodic callback of that session."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.window = pn.widgets.RadioButtonGroup(
            name="Window", options=list(WINDOWS), value=DEFAULT_WINDOW, button_type="primary"
        )
        self.status = pn.pane.Markdown("Waiting for data…", sizing_mode="stretch_width")
        empty = windows_frame([])
        self.pipe = hv.streams.Pipe(data=empty)
        # framewise: each pushed frame sets the ranges (the first frame is empty).
        opts = {"responsive": True, "height": 210, "show_grid": True, "tools": ["hover"], "framewise": True}
        price = hv.DynamicMap(
            lambda data: hv.Curve(data, "time", ("close", "BTC/USD close")).opts(
                color="#f7931a", xaxis=None, **opts
            ),
            streams=[self.pipe],
        )
        # Points, not a line: a window without news has no sentiment, and a line would
        # invent one between its neighbours.
        sentiment = hv.DynamicMap(
            lambda data: (
                hv.Scatter(data, "time", ("sentiment_mean", "mean sentiment")).opts(
                    color="sentiment_mean",
                    cmap="RdYlGn",
                    clim=(-1, 1),
                    size=6,
                    ylim=(-1, 1),
                    xaxis=None,
                    **opts,
                )
                * hv.HLine(0).opts(color="#999999", line_width=1)
            ),
            streams=[self.pipe],
        )
        volume = hv.DynamicMap(
            lambda data: volume_histogram(data).opts(color="#457b9d", line_alpha=0, **opts),
            streams=[self.pipe],
        )
        self.plots = pn.pane.HoloViews(
            (price + sentiment + volume).cols(1).opts(shared_axes=True), sizing_mode="stretch_width"
        )
        self.table = pn.widgets.Tabulator(
            news_frame([]),
            show_index=False,
            disabled=True,
            sizing_mode="stretch_width",
            height=360,
            formatters={"url": {"type": "link", "target": "_blank", "label": "open"}},
            widths={"title": 520},
        )
        self.sources = pn.widgets.Tabulator(
            sources_frame([]), show_index=False, disabled=True, sizing_mode="stretch_width", height=220
        )
        self._ticks = 0
        self.window.param.watch(lambda _e: pn.state.execute(self.refresh), "value")
        # Bootstrap rather than Fast: Fast's theme imports a Google font, and the dashboard
        # must make no request outside the machine that serves it.
        self.layout = pn.template.BootstrapTemplate(
            title="btcpulse — Bitcoin news vs price",
            header_background="#1d3557",
            main=[
                pn.Row(self.window, self.status, sizing_mode="stretch_width"),
                self.plots,
                pn.pane.Markdown("### Latest scored news"),
                self.table,
                pn.pane.Markdown("### Live sources"),
                self.sources,
            ],
        )

    async def refresh(self) -> None:
        span, step = WINDOWS[self.window.value]
        try:
            totals = await self.reader.totals()
            end = (totals.last_ts + 1) if totals.last_ts is not None else datetime.now(UTC).timestamp()
            end = (int(end // step) + 1) * step
            windows = await self.reader.series(end - span, end, step)
            latest = await self.reader.latest(50)
        except Exception as exc:  # keep the session alive; show what is wrong
            log.warning("dashboard refresh failed: %s", exc)
            self.status.object = f"**Data unavailable** ({type(exc).__name__}); retrying…"
            return
        if self._ticks % SOURCES_EVERY == 0:
            try:
                self.sources.value = sources_frame(await self.reader.sources())
            except Exception as exc:
                log.warning("source health unavailable: %s", exc)
        self._ticks += 1
        frame = windows_frame(windows)
        self.pipe.send(frame)
        self.table.value = news_frame(latest)
        last = (
            datetime.fromtimestamp(totals.last_ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
            if totals.last_ts
            else "—"
        )
        self.status.object = (
            f"**{totals.articles:,}** articles · **{totals.prices:,}** price points · "
            f"newest data {last} · {_step_label(step)} buckets"
        )


def volume_histogram(data: pd.DataFrame) -> hv.Histogram:
    """Article counts as bars spanning each bucket (edges: every start, plus the last end)."""
    edges = data["time"]
    if len(data):
        width = edges.iloc[1] - edges.iloc[0] if len(data) >= 2 else pd.Timedelta(minutes=1)
        edges = pd.concat([edges, edges.iloc[-1:] + width])
    return hv.Histogram((edges, data["count"]), kdims=["time"], vdims=[("count", "articles")])


def create_dashboard(reader: Reader) -> pn.template.BootstrapTemplate:
    """Build one session's dashboard and start its refresh loop."""
    dash = Dashboard(reader)
    pn.state.onload(lambda: pn.state.execute(dash.refresh))
    pn.state.add_periodic_callback(dash.refresh, period=REFRESH_MS)  # type: ignore[arg-type]  # async is supported
    return dash.layout

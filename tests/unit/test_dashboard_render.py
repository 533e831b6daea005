"""The dashboard's charts as Bokeh renders them (no server, no browser): every time chart is
on one shared x range, and pushing windows moves it onto their span (the first frames are
empty; a range stuck at its initial value or a failing update would leave the charts blank)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bokeh.models as bm
import holoviews as hv
import numpy as np

from cluster.records import WindowAggregate, format_time
from ui import dashboard as d

T0 = datetime(2022, 5, 9, tzinfo=UTC)


def _windows(n: int = 48) -> list[WindowAggregate]:
    out = []
    for i in range(n):
        k = i % 3
        out.append(
            WindowAggregate(
                start=format_time(T0 + timedelta(hours=i)),
                step_s=3600,
                count=k,
                sentiment_mean=0.2 if k else None,
                positive=k,
                neutral=0,
                negative=0,
                close=30_000.0 + 10 * i,
                topics=[1] if k else [],
                topic_counts=[k] if k else [],
                categories=["regulation"] if k else [],
                category_counts=[1] if k else [],
                sources=["CoinDesk"] if k else [],
                source_counts=[k] if k else [],
            )
        )
    return out


def _x_ranges(plot) -> list[tuple[np.datetime64, np.datetime64]]:
    return [
        (r.start, r.end)
        for r in plot.state.select({"type": bm.Range1d})
        if isinstance(r.start, np.datetime64) or isinstance(r.end, np.datetime64)
    ]


def test_pushed_windows_set_one_shared_time_axis_over_their_span() -> None:
    dash = d.Dashboard(reader=None)  # type: ignore[arg-type]  # nothing is read here
    plot = hv.renderer("bokeh").get_plot(dash.plots.object)
    windows = _windows()
    dash._send("series", dash.pipe, d.windows_frame(windows))
    dash._send("shares", dash.share_pipe, d.windows_frame(windows))
    dash._send("events", dash.event_pipe, d.event_spans([]))
    dash._send("categories", dash.category_pipe, d.categories_frame(windows))
    dash._send("river", dash.river_pipe, d.river_frame(windows, {1: "terra, luna"}))
    dash._send("sources", dash.source_pipe, d.source_volume_frame(windows))
    ranges = _x_ranges(plot)
    assert len(ranges) == 1, f"the time charts do not share one x range: {ranges}"
    start, end = ranges[0]
    span_h = (end - start) / np.timedelta64(1, "h")
    assert start <= np.datetime64("2022-05-09T00:00") and end >= np.datetime64("2022-05-10T23:00")
    assert 47 <= span_h <= 50
    # the sentiment-share bars keep their own 0..1 y range (not the volume bars' 0..2)
    y_ranges = [
        (r.start, r.end)
        for r in plot.state.select({"type": bm.Range1d})
        if not isinstance(r.start, np.datetime64)
    ]
    assert any(-0.01 <= lo <= 0 and 1 <= hi <= 1.1 for lo, hi in y_ranges), y_ranges
    assert any(hi >= 2 for _, hi in y_ranges), y_ranges


def test_categories_frame_is_a_full_grid_with_readable_labels() -> None:
    from models.categories import CATEGORIES, CATEGORY_LABELS

    frame = d.categories_frame(_windows(3))
    assert len(frame) == 3 * len(CATEGORIES)
    assert set(frame["category"]) == {CATEGORY_LABELS[c] for c in CATEGORIES}
    assert frame["articles"].sum() == 2  # buckets 1 and 2 each had one regulation article
    placeholder = d.categories_frame([], placeholder_ts=T0.timestamp())
    assert len(placeholder) == len(CATEGORIES) and placeholder["articles"].eq(0).all()

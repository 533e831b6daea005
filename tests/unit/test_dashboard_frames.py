"""ui.dashboard's pure frame builders: news rows with their analyses, events, topics, the
topic river, the sentiment/price lead-lag, the history range and pipeline health."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from cluster.records import NewsEvent, WindowAggregate
from ui.dashboard import (
    EVENT_COLUMNS,
    MAX_BUCKETS,
    NEWS_COLUMNS,
    PIPELINE_COLUMNS,
    events_frame,
    history_range,
    history_step,
    lead_lag,
    mood,
    news_frame,
    pipeline_frame,
    river_bars_frame,
    river_frame,
    share_bars_frame,
    source_volume_frame,
    topics_frame,
)


def _window(start: str, count: int, topics: list[int], counts: list[int]) -> WindowAggregate:
    return WindowAggregate(
        start=start,
        step_s=3600,
        count=count,
        sentiment_mean=0.1,
        positive=count,
        neutral=0,
        negative=0,
        topics=topics,
        topic_counts=counts,
    )


def test_news_frame_joins_categories_and_keeps_text_as_text() -> None:
    row = {
        "published_at": "2022-05-11T10:00:00Z",
        "source": "CoinTelegraph",
        "sentiment_label": "negative",
        "sentiment": -0.81234,
        "title": "<script>alert(1)</script> UST loses its peg",
        "categories": ["macro_markets", "security_hacks"],
        "topic_label": "terra, luna",
        "url": "https://example.com/a",
    }
    frame = news_frame([row])
    assert list(frame.columns) == NEWS_COLUMNS
    assert frame.loc[0, "categories"] == "macro_markets, security_hacks"
    assert frame.loc[0, "sentiment"] == -0.812
    assert frame.loc[0, "title"] == row["title"]  # shown by Tabulator as text, not parsed here
    assert news_frame([]).empty


def test_events_frame() -> None:
    event = NewsEvent(
        id="e",
        kind="volume",
        key="topic:3",
        label="terra, luna",
        keywords=["terra", "luna", "ust", "kwon", "plan", "peg", "extra"],
        start="2022-05-11T00:00:00Z",
        peak="2022-05-12T00:00:00Z",
        end=None,
        peak_value=40.0,
        baseline=4.0,
        score=15.04,
        examples=[],
    )
    frame = events_frame([event])
    assert list(frame.columns) == EVENT_COLUMNS
    assert frame.iloc[0].to_dict() == {
        "start": "2022-05-11 00:00",
        "end": "open",
        "kind": "volume",
        "label": "terra, luna",
        "score": 15.0,
        "keywords": "terra, luna, ust, kwon, plan, peg",
    }


def test_topics_frame_sums_over_buckets_and_ranks() -> None:
    windows = [
        _window("2022-05-11T00:00:00Z", 10, [3, 5], [6, 2]),
        _window("2022-05-11T01:00:00Z", 10, [5, 3], [5, 1]),
        _window("2022-05-11T02:00:00Z", 0, [], []),
    ]
    frame = topics_frame(windows, {3: "terra, luna"})
    # ties rank by topic id
    assert frame.to_dict("records") == [
        {"topic": "terra, luna", "articles": 7, "share": "35.0%"},
        {"topic": "topic 5", "articles": 7, "share": "35.0%"},
    ]
    assert topics_frame([], {}).empty


def test_lead_lag_peaks_where_sentiment_leads_the_returns() -> None:
    rng = np.random.default_rng(7)
    sentiment = rng.normal(size=200)
    returns = np.concatenate([rng.normal(size=2), sentiment[:-2]])  # return at t+2 follows sentiment at t
    close = 100 * np.cumprod(1 + 0.01 * returns)
    frame = pd.DataFrame({"sentiment_mean": sentiment, "close": close})
    frame.loc[10, "sentiment_mean"] = np.nan  # a bucket without news
    result = lead_lag(frame, 6)
    assert list(result.columns) == ["lag", "corr", "n"]
    assert result["lag"].tolist() == list(range(-6, 7))
    peak = result.loc[result["corr"].idxmax()]
    assert peak["lag"] == 2 and peak["corr"] > 0.99
    assert abs(result.set_index("lag").loc[0, "corr"]) < 0.3
    # 200 buckets, less the 2 whose return 2 buckets later is outside the window, less the empty one
    assert result.set_index("lag").loc[2, "n"] == 200 - 2 - 1
    # lag -2: also less the first bucket, which has no return
    assert result.set_index("lag").loc[-2, "n"] == 200 - 2 - 1 - 1


def test_lead_lag_without_enough_data_is_nan() -> None:
    frame = pd.DataFrame({"sentiment_mean": [0.1, None, 0.3], "close": [1.0, 2.0, None]})
    result = lead_lag(frame, 2)
    assert len(result) == 5 and result["corr"].isna().all()
    assert lead_lag(pd.DataFrame({"sentiment_mean": [], "close": []}), 1)["n"].tolist() == [0, 0, 0]


def test_history_range_step_follows_span() -> None:
    assert history_step(3600) == 60
    assert history_step(2 * 86400) == 15 * 60  # 192 buckets
    assert history_step(30 * 86400) == 3 * 3600  # 240 buckets
    assert history_step(365 * 86400) == 86400
    assert history_step(3 * 365 * 86400) == 3 * 86400
    start, end, step = history_range(datetime(2022, 5, 1, 10, 7), datetime(2022, 5, 20, 13, 1))
    assert step == 3600 and (end - start) / step <= MAX_BUCKETS
    assert start == datetime(2022, 5, 1, 10, tzinfo=UTC).timestamp()  # naive = UTC, snapped
    assert end == datetime(2022, 5, 20, 14, tzinfo=UTC).timestamp()


def test_river_frame_shares_of_top_topics() -> None:
    windows = [
        _window("2022-05-11T00:00:00Z", 10, [3, 5, 9], [6, 2, 2]),
        _window("2022-05-11T01:00:00Z", 0, [], []),
        _window("2022-05-11T02:00:00Z", 4, [5], [4]),
    ]
    frame, labels = river_frame(windows, {3: "terra, luna"}, top=2)
    assert labels == ["terra, luna", "topic 5"]  # 6 vs 6 articles: ties rank by id; topic 9 left out
    assert frame["t0"].tolist() == [0.6, 0.0, 0.0]
    assert frame["t1"].tolist() == [0.2, 0.0, 1.0]
    assert str(frame["time"].iloc[2]) == "2022-05-11 02:00:00"
    empty, none = river_frame([], {})
    assert empty.empty and none == []


def test_pipeline_frame() -> None:
    rows = [
        {"stage": "analysis", "actors": 2, "backlog": 5, "unacked": 1, "processed": 10, "last_batch_at": 0.0},
        {"stage": "aggregator", "actors": 1, "backlog": None, "unacked": None, "processed": 3,
         "last_batch_at": datetime(2022, 5, 11, 1, 2, 3, tzinfo=UTC).timestamp()},
    ]  # fmt: skip
    frame = pipeline_frame(rows)
    assert list(frame.columns) == PIPELINE_COLUMNS
    assert frame["last_batch_at"].tolist() == ["never", "2022-05-11 01:02:03"]


def _by_source(start: str, sources: list[str], counts: list[int]) -> WindowAggregate:
    return WindowAggregate(
        start=start,
        step_s=3600,
        count=sum(counts),
        sentiment_mean=0.1,
        positive=sum(counts),
        neutral=0,
        negative=0,
        sources=sources,
        source_counts=counts,
    )


def test_source_volume_stacks_the_largest_sources_and_sums_the_rest() -> None:
    windows = [
        _by_source("2022-05-11T10:00:00Z", ["a", "b", "c"], [5, 3, 1]),
        _by_source("2022-05-11T11:00:00Z", ["b", "d"], [4, 2]),
        _by_source("2022-05-11T12:00:00Z", [], []),
    ]
    frame, order = source_volume_frame(windows, top=2)
    assert order == ["b", "a", "other"]  # b: 7, a: 5; c and d summed as other
    first = frame[frame["time"] == pd.Timestamp("2022-05-11 10:00")]
    assert first[["layer", "y0", "y1"]].values.tolist() == [["b", 0, 3], ["a", 3, 8], ["other", 8, 9]]
    second = frame[frame["time"] == pd.Timestamp("2022-05-11 11:00")]
    assert second[["layer", "y0", "y1"]].values.tolist() == [["b", 0, 4], ["other", 4, 6]]
    assert (second["time_end"] - second["time"] == pd.Timedelta(hours=1)).all()
    # each bucket's stack is as tall as its article count; an empty bucket draws nothing
    assert frame.groupby("time")["y1"].max().tolist() == [9, 6]
    empty, none = source_volume_frame([])
    assert empty.empty and none == []
    assert str(empty["time"].dtype) == "datetime64[ns]"


def test_share_bars_stack_each_buckets_sentiment_shares_to_one() -> None:
    data = pd.DataFrame(
        {
            "time": pd.to_datetime(["2022-05-11 10:00", "2022-05-11 11:00", "2022-05-11 12:00"]),
            "count": [4, 0, 2],
            "negative": [1, 0, 0],
            "neutral": [1, 0, 0],
            "positive": [2, 0, 2],
        }
    )
    bars = share_bars_frame(data)
    first = bars[bars["time"] == pd.Timestamp("2022-05-11 10:00")]
    assert first[["layer", "y0", "y1"]].values.tolist() == [
        ["negative", 0.0, 0.25],
        ["neutral", 0.25, 0.5],
        ["positive", 0.5, 1.0],
    ]
    assert pd.Timestamp("2022-05-11 11:00") not in set(bars["time"])  # no articles, no bar
    assert bars[bars["time"] == pd.Timestamp("2022-05-11 12:00")]["layer"].tolist() == ["positive"]
    assert (bars["time_end"] - bars["time"] == pd.Timedelta(hours=1)).all()


def test_mood_is_the_weighted_sentiment_of_the_latest_news() -> None:
    frame = pd.DataFrame(
        {
            "count": [10, 0, 1, 3, 0],
            "sentiment_mean": [-0.9, np.nan, 0.6, 0.2, np.nan],
        }
    )
    label, score = mood(frame, buckets=2)  # the two latest buckets with news: 1 x 0.6, 3 x 0.2
    assert label == "bullish" and score == pytest.approx(0.3)
    assert mood(frame, buckets=3)[0] == "bearish"  # the -0.9 bucket of 10 articles weighs in
    assert mood(frame.assign(sentiment_mean=0.05), buckets=3) == ("neutral", pytest.approx(0.05))
    assert mood(frame.iloc[:0]) == ("no news", None)


def test_river_bars_stack_the_top_topics_shares() -> None:
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(["2022-05-11 10:00", "2022-05-11 11:00"]),
            "t0": [0.5, 0.0],
            "t1": [0.25, 0.0],
        }
    )
    bars = river_bars_frame(frame, ["terra, luna", "ukraine, russia"])
    assert bars[["layer", "y0", "y1"]].values.tolist() == [
        ["terra, luna", 0.0, 0.5],
        ["ukraine, russia", 0.5, 0.75],
    ]
    assert (bars["time_end"] - bars["time"] == pd.Timedelta(hours=1)).all()

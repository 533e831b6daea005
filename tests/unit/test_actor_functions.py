"""The pure functions next to the actors: aggregator.touched_windows, analysis.analyze (with
the real embedder and sentiment models) and analysis.payload, and pulsar_admin._stats_url."""

from __future__ import annotations

import os

# Before anything imports transformers / huggingface_hub: never reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from actors.aggregator import WINDOW_S, touched_windows
from actors.analysis import Analysis, analyze, payload
from cluster.pulsar_admin import _stats_url
from cluster.records import NewsItem, ScoredArticle, parse_time
from cluster.settings import BtcpulseSettings
from models.embedder import Embedder
from models.sentiment import LABELS, LexiconSentiment

T0 = datetime(2022, 7, 5, 4, 24, tzinfo=UTC)

# ---------------------------------------------------------------- touched_windows


def test_touched_windows_distinct_sorted_minutes() -> None:
    times = [125.0, 60.0, 119.999, 61.5, 0.0, 3600.0]
    assert touched_windows(times) == [(0.0, 60.0), (60.0, 120.0), (120.0, 180.0), (3600.0, 3660.0)]
    assert WINDOW_S == 60


def test_touched_windows_empty_and_types() -> None:
    assert touched_windows([]) == []
    ((start, end),) = touched_windows([1656995059.9])
    assert (start, end) == (1656995040.0, 1656995100.0)
    assert isinstance(start, float)
    assert isinstance(end, float)


def test_touched_windows_other_step_and_boundaries() -> None:
    assert touched_windows([3599.0, 3600.0, 7199.5], step_s=3600) == [(0.0, 3600.0), (3600.0, 7200.0)]
    assert touched_windows([-1.0], step_s=60) == [(-60.0, 0.0)]


# ---------------------------------------------------------------- analyze / payload


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def sentiment() -> LexiconSentiment:
    return LexiconSentiment()


def _item(n: int, title: str, summary: str | None = None, published: datetime | None = T0) -> NewsItem:
    return NewsItem.create(
        source="coindesk" if n % 2 else "reddit",
        url=f"https://example.com/story/{n}",
        title=title,
        summary=summary,
        published_at=published,
        fetched_at=T0 + timedelta(minutes=1),
    )


ITEMS = [
    _item(
        1, "Bitcoin soars to a record high as investors celebrate huge gains", "Great rally, strong demand"
    ),
    _item(2, "Bitcoin crashes as exchange hack wipes out billions and traders panic", "Terrible losses"),
    _item(3, "Bitcoin network processes transactions on Tuesday"),
    _item(4, "SEC approves spot bitcoin exchange-traded fund", published=None),
]


@pytest.fixture(scope="module")
def analysis(embedder: Embedder, sentiment: LexiconSentiment) -> Analysis:
    return analyze(ITEMS, embedder, sentiment, batch_size=2)


def test_analyze_vectors(analysis: Analysis, embedder: Embedder) -> None:
    assert analysis.vectors.shape == (4, 384)
    assert analysis.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(analysis.vectors, axis=1), 1.0, atol=1e-5)
    # row i belongs to item i (the models read title + summary)
    single = embedder.encode([ITEMS[2].text])
    np.testing.assert_allclose(analysis.vectors[2], single[0], atol=1e-5)


def test_analyze_articles_match_items(analysis: Analysis) -> None:
    arts = analysis.articles
    assert [a.id for a in arts] == [i.id for i in ITEMS]
    assert all(isinstance(a, ScoredArticle) for a in arts)
    for a, item in zip(arts, ITEMS, strict=True):
        assert (a.title, a.url, a.source, a.published_at, a.time_estimated) == (
            item.title,
            item.url,
            item.source,
            item.published_at,
            item.time_estimated,
        )
    assert arts[3].time_estimated is True
    assert {a.model for a in arts} == {"all-MiniLM-L6-v2+vader+crypto"}


def test_analyze_sentiment(analysis: Analysis, sentiment: LexiconSentiment) -> None:
    arts = analysis.articles
    assert all(-1.0 <= a.sentiment <= 1.0 for a in arts)
    assert all(isinstance(a.sentiment, float) for a in arts)
    assert {a.sentiment_label for a in arts} <= set(LABELS)
    assert all(type(a.sentiment_label) is str for a in arts)
    assert arts[0].sentiment_label == "positive"
    assert arts[1].sentiment_label == "negative"
    assert arts[0].sentiment > 0 > arts[1].sentiment
    # the same scores and labels as the sentiment model gives on the same texts
    scores, labels = sentiment.score([i.text for i in ITEMS])
    assert [a.sentiment for a in arts] == pytest.approx([float(s) for s in scores])
    assert [a.sentiment_label for a in arts] == [str(lab) for lab in labels]


def test_analyze_semantics(analysis: Analysis, embedder: Embedder) -> None:
    (q,) = embedder.encode(["bitcoin ETF approval by the SEC"])
    sims = analysis.vectors @ q
    assert int(np.argmax(sims)) == 3


def test_analyze_empty_batch(embedder: Embedder, sentiment: LexiconSentiment) -> None:
    out = analyze([], embedder, sentiment, batch_size=8)
    assert out.vectors.shape == (0, 384)
    assert out.articles == []


def test_analyze_analyzed_at_is_now(analysis: Analysis) -> None:
    now = datetime.now(UTC)
    for a in analysis.articles:
        assert abs(parse_time(a.analyzed_at) - now) < timedelta(minutes=5)


def test_payload(analysis: Analysis) -> None:
    a = analysis.articles[0]
    p = payload(a)
    assert set(p) == {
        "id",
        "title",
        "url",
        "source",
        "summary",
        "published_at",
        "published_ts",
        "sentiment",
        "sentiment_label",
        "analyzed_at",
    }
    assert p["id"] == a.id == ITEMS[0].id
    assert p["url"] == "https://example.com/story/1"
    assert p["published_at"] == "2022-07-05T04:24:00Z"
    assert p["published_ts"] == 1656995040.0
    assert isinstance(p["published_ts"], float)
    assert p["sentiment"] == a.sentiment
    assert p["sentiment_label"] == "positive"
    assert p["summary"] == "Great rally, strong demand"


def test_payload_bounds_summary() -> None:
    item = NewsItem.create(
        source="s",
        url="https://example.com/long",
        title="t",
        summary="x" * 1500,
        published_at=T0,
        fetched_at=T0,
    )
    scored = ScoredArticle.from_news(item, sentiment=0.0, label="neutral", model="m", analyzed_at=T0)
    p = payload(scored)
    assert len(item.summary) == 1500
    assert p["summary"] == "x" * 500


# ---------------------------------------------------------------- pulsar_admin._stats_url


def test_stats_url_default_admin() -> None:
    s = BtcpulseSettings(pulsar_web_port=18080, pulsar_admin_url=None)
    assert _stats_url(s, "persistent://public/default/btcpulse.news.raw") == (
        "http://127.0.0.1:18080/admin/v2/persistent/public/default/btcpulse.news.raw/stats"
    )


def test_stats_url_external_admin_and_non_persistent() -> None:
    s = BtcpulseSettings(pulsar_admin_url="https://pulsar.example:8443")
    assert _stats_url(s, "non-persistent://t/ns/a b") == (
        "https://pulsar.example:8443/admin/v2/non-persistent/t/ns/a%20b/stats"
    )


def test_stats_url_needs_scheme() -> None:
    with pytest.raises(ValueError):
        _stats_url(BtcpulseSettings(), "public/default/x")

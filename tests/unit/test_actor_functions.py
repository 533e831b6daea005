"""The pure functions next to the actors: aggregator.touched_windows / event_record,
analysis.analyze and score (with the real models), analysis.payload and model_threads,
common.consume_batches, and pulsar_admin._topic_url."""

from __future__ import annotations

import os

# Before anything imports transformers / huggingface_hub: never reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pulsar
import pytest

from actors.aggregator import WINDOW_S, event_record, topic_keywords, touched_windows
from actors.analysis import Analysis, analyze, payload, score
from cluster.pulsar_admin import _topic_url
from cluster.records import NewsEvent, NewsItem, ScoredArticle, parse_time
from cluster.settings import BtcpulseSettings
from models.bursts import Event
from models.pipeline import Analyzer
from models.sentiment import LABELS

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
def analyzer() -> Analyzer:
    return Analyzer(batch_size=2)


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
TOPICS = [
    {"topic_id": 1, "label": "record, rally", "keywords": ["record", "rally"], "score": 0.8},
    {"topic_id": 2, "label": "hack, exchange", "keywords": ["hack"], "score": 0.7},
    {"topic_id": -1, "label": "unassigned", "keywords": [], "score": 0.0},
    {"topic_id": 4, "label": "etf, sec", "keywords": ["etf", "sec"], "score": 0.9},
]


@pytest.fixture(scope="module")
def analysis(analyzer: Analyzer) -> Analysis:
    return analyze(ITEMS, analyzer)


@pytest.fixture(scope="module")
def articles(analysis: Analysis, analyzer: Analyzer) -> list[ScoredArticle]:
    return score(analysis, TOPICS, [ITEMS[0].id, ITEMS[1].id, ITEMS[2].id, ITEMS[0].id], analyzer.name)


def test_analyze_vectors(analysis: Analysis, analyzer: Analyzer) -> None:
    assert analysis.vectors.shape == (4, 384)
    assert analysis.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(analysis.vectors, axis=1), 1.0, atol=1e-5)
    # row i belongs to item i (the models read title + summary)
    single = analyzer.embedder.encode([ITEMS[2].text])
    np.testing.assert_allclose(analysis.vectors[2], single[0], atol=1e-5)


def test_score_articles_match_items(articles: list[ScoredArticle], analyzer: Analyzer) -> None:
    assert [a.id for a in articles] == [i.id for i in ITEMS]
    for a, item in zip(articles, ITEMS, strict=True):
        assert (a.title, a.url, a.source, a.published_at, a.time_estimated) == (
            item.title,
            item.url,
            item.source,
            item.published_at,
            item.time_estimated,
        )
    assert articles[3].time_estimated is True
    assert {a.model for a in articles} == {analyzer.name}
    assert [a.topic_id for a in articles] == [1, 2, -1, 4]
    assert articles[3].topic_label == "etf, sec"
    assert articles[3].story_id == ITEMS[0].id


def test_analyze_sentiment(analysis: Analysis, articles: list[ScoredArticle], analyzer: Analyzer) -> None:
    assert all(-1.0 <= a.sentiment <= 1.0 and 0.0 <= a.confidence <= 1.0 for a in articles)
    assert {a.sentiment_label for a in articles} <= set(LABELS)
    assert all(type(a.sentiment_label) is str for a in articles)
    assert articles[0].sentiment_label == "positive"
    assert articles[1].sentiment_label == "negative"
    assert articles[0].sentiment > 0 > articles[1].sentiment
    # the same scores and labels as the sentiment model gives on the same texts
    direct = analyzer.sentiment.predict([i.text for i in ITEMS])
    assert [a.sentiment for a in articles] == pytest.approx([float(s) for s in direct.scores], abs=1e-5)
    assert [a.sentiment_label for a in articles] == list(direct.labels)


def test_analyze_categories(articles: list[ScoredArticle]) -> None:
    for a in articles:
        assert len(a.categories) == len(a.category_scores)
        assert a.category_scores == sorted(a.category_scores, reverse=True)
    assert "etf_institutional" in articles[3].categories
    assert "security_hacks" in articles[1].categories


def test_analyze_semantics(analysis: Analysis, analyzer: Analyzer) -> None:
    (q,) = analyzer.embedder.encode(["bitcoin ETF approval by the SEC"])
    sims = analysis.vectors @ q
    assert int(np.argmax(sims)) == 3


def test_analyze_empty_batch(analyzer: Analyzer) -> None:
    out = analyze([], analyzer)
    assert out.vectors.shape == (0, 384)
    assert out.fields == []
    assert score(out, [], [], "m") == []


def test_score_analyzed_at_is_now(articles: list[ScoredArticle]) -> None:
    now = datetime.now(UTC)
    for a in articles:
        assert abs(parse_time(a.analyzed_at) - now) < timedelta(minutes=5)


def test_payload(articles: list[ScoredArticle]) -> None:
    a = articles[3]
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
        "confidence",
        "categories",
        "category_scores",
        "topic_id",
        "topic_label",
        "story_id",
        "analyzed_at",
    }
    p0 = payload(articles[0])
    assert p0["id"] == articles[0].id == ITEMS[0].id
    assert p0["url"] == "https://example.com/story/1"
    assert p0["published_at"] == "2022-07-05T04:24:00Z"
    assert p0["published_ts"] == 1656995040.0
    assert isinstance(p0["published_ts"], float)
    assert p0["sentiment_label"] == "positive"
    assert p0["summary"] == "Great rally, strong demand"
    assert (p["topic_id"], p["story_id"], p["categories"]) == (4, ITEMS[0].id, a.categories)


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


def test_event_record_and_topic_keywords() -> None:
    event = Event(
        id="e",
        kind="volume",
        key="topic:3",
        label="luna, terra",
        keywords=["luna", "terra"],
        start=T0.timestamp(),
        peak=T0.timestamp() + 3600,
        end=None,
        peak_value=30.0,
        baseline=2.0,
        score=14.2,
        examples=["a"],
    )
    record = event_record(event)
    assert (record.start, record.peak, record.end) == ("2022-07-05T04:24:00Z", "2022-07-05T05:24:00Z", None)
    assert NewsEvent.from_dict(record.to_dict()) == record
    assert topic_keywords("luna, terra classic, ust") == ["luna", "terra classic", "ust"]
    assert topic_keywords("") == []


# ---------------------------------------------------------------- pulsar_admin._topic_url


def test_stats_url_default_admin() -> None:
    s = BtcpulseSettings(pulsar_web_port=18080, pulsar_admin_url=None)
    assert _topic_url(s, "persistent://public/default/btcpulse.news.raw", "stats") == (
        "http://127.0.0.1:18080/admin/v2/persistent/public/default/btcpulse.news.raw/stats"
    )
    assert _topic_url(s, "persistent://public/default/btcpulse.news.raw", "partitioned-stats").endswith(
        "/btcpulse.news.raw/partitioned-stats"
    )


def test_stats_url_external_admin_and_non_persistent() -> None:
    s = BtcpulseSettings(pulsar_admin_url="https://pulsar.example:8443")
    assert _topic_url(s, "non-persistent://t/ns/a b", "stats") == (
        "https://pulsar.example:8443/admin/v2/non-persistent/t/ns/a%20b/stats"
    )


def test_stats_url_needs_scheme() -> None:
    with pytest.raises(ValueError):
        _topic_url(BtcpulseSettings(), "public/default/x", "stats")


def test_logical_topic_drops_the_partition_suffix_only() -> None:
    from actors.common import logical_topic

    raw = "persistent://public/default/btcpulse.news.raw"
    assert logical_topic(raw + "-partition-3") == raw
    assert logical_topic(raw) == raw
    assert logical_topic("persistent://t/ns/my-partition-topic") == "persistent://t/ns/my-partition-topic"


def test_fault_hooks_refuse_unless_enabled_and_poison_only_marked_texts() -> None:
    from actors.common import FaultHooks

    off = FaultHooks(False, "analysis")
    with pytest.raises(PermissionError, match="BTCPULSE_FAULT_INJECTION"):
        off.arm("crash_after_write")
    off.after_write()  # nothing armed: returns
    on = FaultHooks(True, "analysis")
    with pytest.raises(ValueError, match="unknown fault"):
        on.arm("meteor")
    with pytest.raises(ValueError, match="unknown fault"):
        on.arm("poison")  # a poison needs its marker
    on.arm("poison", "POISON-1")
    on.check_texts(["Bitcoin rallies", "ETF approved"])
    with pytest.raises(ValueError, match="injected poison"):
        on.check_texts(["Bitcoin rallies", "POISON-1 here"])


def test_model_threads_share_the_node_between_the_pools_actors() -> None:
    from actors.analysis import model_threads

    assert model_threads(BtcpulseSettings(), cpus=2) == 2  # one actor: the whole machine, not Ray's 1
    assert model_threads(BtcpulseSettings(analysis_max_actors=2), cpus=2) == 1
    assert model_threads(BtcpulseSettings(analysis_actors=3), cpus=16) == 5
    assert model_threads(BtcpulseSettings(analysis_max_actors=4), cpus=2) == 1  # never 0
    assert model_threads(BtcpulseSettings(analysis_threads=3), cpus=2) == 3  # as configured
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        BtcpulseSettings(analysis_threads=0)


class _Queue:
    """A consumer's side of the broker: ``receive`` blocks up to its timeout, ``batch_receive``
    takes what is queued (up to ``size``)."""

    def __init__(self, batches: list[list[str]], stop: threading.Event, size: int = 3) -> None:
        self._batches = batches
        self._queued: list[str] = []
        self._stop = stop
        self._size = size
        self.timeouts = 0

    def receive(self, timeout_millis: int) -> str:
        if not self._queued and self._batches:
            self._queued = self._batches.pop(0)
        if not self._queued:
            self.timeouts += 1
            self._stop.set()
            raise pulsar.Timeout()
        return self._queued.pop(0)

    def batch_receive(self) -> list[str]:
        taken, self._queued = self._queued[: self._size], self._queued[self._size :]
        return taken


def test_consume_batches_starts_on_the_first_message_and_takes_what_is_queued() -> None:
    from actors.common import consume_batches

    stop = threading.Event()
    queue = _Queue([["a"], ["b", "c", "d", "e", "f"]], stop)
    handled: list[list[str]] = []
    consume_batches(queue, handled.append, stop)  # type: ignore[arg-type]
    # a lone message is handled alone at once; a backlog in batches of 1 + the policy's size
    assert handled == [["a"], ["b", "c", "d", "e"], ["f"]]
    assert queue.timeouts == 1  # idle: blocked on receive, then looked at the stop flag


def test_model_env_lets_openmp_threads_sleep_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from actors.analysis import model_env

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert model_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert model_env() == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_lower_priority_applies_to_the_calling_thread_only() -> None:
    from actors.topics import lower_priority

    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(lower_priority(min(19, before + 2))))
    worker.start()
    worker.join()
    assert seen == [min(19, before + 2)]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # this thread, the process: unchanged
    assert lower_priority(before - 1 if before > -20 else before) == before  # never raised

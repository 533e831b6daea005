"""The analysis consumer: raw news in, scored news and vectors out.

    news.raw                      NewsItem messages, received in batches (size / wait bounded)
      -> decode                   a message that does not decode -> deadletter, acked
      -> analyze                  (n, dim) float32 unit vectors, (n,) sentiment in [-1, 1]
      -> vector-store.upsert      points keyed by article id (durable before we go on)
      -> news.scored              ScoredArticle per item, every send confirmed by the broker
      -> acknowledge              only now; a crash before this redelivers, and the writes
                                  above are idempotent, so nothing is lost or counted twice

A batch the models fail on is retried one message at a time; a message that keeps
failing is negatively acknowledged until its redelivery count reaches ``max_redeliveries``,
then goes to the dead-letter topic with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pulsar
import ray

from actors.common import ACTOR_OPTIONS, BatchSender, consume_batches, dead_letter, supervised_thread
from cluster.records import NewsItem, ScoredArticle
from cluster.settings import BtcpulseSettings
from cluster.topics import Topics, connect, create_producer, subscribe

log = logging.getLogger(__name__)

SUBSCRIPTION = "analysis"


class EmbedderLike(Protocol):
    @property
    def name(self) -> str: ...

    def encode(self, texts: list[str], batch_size: int = ...) -> np.ndarray: ...


class SentimentLike(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Analysis:
    vectors: np.ndarray
    articles: list[ScoredArticle]


def analyze(
    items: Sequence[NewsItem], embedder: EmbedderLike, sentiment: SentimentLike, batch_size: int
) -> Analysis:
    """Run the models over ``items`` (pure: no I/O)."""
    texts = [item.text for item in items]
    vectors = embedder.encode(texts, batch_size=batch_size)
    scores, labels = sentiment.score(texts)
    model = f"{embedder.name}+{sentiment.name}"
    articles = [
        ScoredArticle.from_news(item, sentiment=float(s), label=str(lab), model=model)
        for item, s, lab in zip(items, scores, labels, strict=True)
    ]
    return Analysis(vectors=vectors, articles=articles)


def payload(article: ScoredArticle) -> dict[str, Any]:
    """What Qdrant keeps beside the vector: enough to answer a search without another read."""
    return {
        "id": article.id,
        "title": article.title,
        "url": article.url,
        "source": article.source,
        "summary": article.summary[:500],
        "published_at": article.published_at,
        "published_ts": article.published_ts,
        "sentiment": article.sentiment,
        "sentiment_label": article.sentiment_label,
        "analyzed_at": article.analyzed_at,
    }


@ray.remote(num_cpus=1, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class AnalysisConsumer:
    """Ray actor around :func:`analyze`; subscribes to news.raw with a shared subscription."""

    def __init__(self, settings: BtcpulseSettings, store: Any) -> None:
        from models.embedder import Embedder
        from models.sentiment import LexiconSentiment

        self._settings = settings
        self._store = store
        self._stats: Counter[str] = Counter()
        self._last_batch_at = 0.0
        self._stop = threading.Event()
        self._embedder = Embedder(settings.embedding_model, device=settings.device)
        if self._embedder.dim != settings.embedding_dim:
            raise ValueError(
                f"embedding model has dim {self._embedder.dim}, settings say {settings.embedding_dim}"
            )
        self._sentiment = LexiconSentiment()
        self._topics = Topics.from_settings(settings)
        self._client = connect(settings)
        self._consumer = subscribe(self._client, self._topics.news_raw, SUBSCRIPTION, settings)
        self._scored = BatchSender(create_producer(self._client, self._topics.news_scored))
        self._dlq = create_producer(self._client, self._topics.deadletter)
        self._thread = supervised_thread(
            lambda: consume_batches(self._consumer, self._handle, self._stop), "analysis"
        )

    # -- batches -------------------------------------------------------------------------
    def _handle(self, msgs: list[pulsar.Message]) -> None:
        good: list[tuple[pulsar.Message, NewsItem]] = []
        for msg in msgs:
            try:
                good.append((msg, self._topics.news_raw.decode(msg.data())))
            except (ValueError, TypeError) as exc:
                self._dead(msg, f"undecodable NewsItem: {exc}")
        if not good:
            return
        try:
            self._process(good)
        except Exception as exc:  # a model or store failure: isolate the message that causes it
            if len(good) == 1:
                self._failed(good[0][0], exc)
                return
            log.warning("batch of %d failed (%s); retrying one by one", len(good), exc)
            for pair in good:
                try:
                    self._process([pair])
                except Exception as one_exc:
                    self._failed(pair[0], one_exc)

    def _process(self, batch: list[tuple[pulsar.Message, NewsItem]]) -> None:
        items = [item for _, item in batch]
        result = analyze(items, self._embedder, self._sentiment, self._settings.embed_batch_size)
        # vectors: (n, dim) float32; articles: n ScoredArticle
        ray.get(
            self._store.upsert.remote(
                [a.id for a in result.articles], result.vectors, [payload(a) for a in result.articles]
            )
        )
        for article in result.articles:
            self._scored.send(article, key=article.id)
        self._scored.wait()
        for msg, _ in batch:
            self._consumer.acknowledge(msg)
        self._stats["processed"] += len(batch)
        self._stats["batches"] += 1
        self._last_batch_at = time.time()

    def _failed(self, msg: pulsar.Message, exc: Exception) -> None:
        redeliveries = msg.redelivery_count()
        if redeliveries + 1 >= self._settings.max_redeliveries:
            self._dead(msg, f"{type(exc).__name__}: {exc}", redeliveries)
        else:
            self._stats["nacked"] += 1
            self._consumer.negative_acknowledge(msg)

    def _dead(self, msg: pulsar.Message, reason: str, redeliveries: int = 0) -> None:
        dead_letter(self._dlq, msg, reason, redeliveries)
        self._consumer.acknowledge(msg)
        self._stats["dead_lettered"] += 1
        log.warning("dead-lettered %s: %s", msg.message_id(), reason)

    # -- control -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {**self._stats, "last_batch_at": self._last_batch_at, "model": self._embedder.name}

    def stop(self) -> None:
        """Stop receiving and close cleanly (unacknowledged messages go back to the broker)."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()

"""The analysis consumer: raw news in, scored news and vectors out.

    news.raw                      NewsItem messages, received in batches (size / wait bounded)
      -> decode                   a message that does not decode -> deadletter, acked;
                                  texts over the collectors' bounds are cut to them
      -> Analyzer.analyze         one embedding pass -> vectors, categories; sentiment
                                  (models.pipeline; pure, no I/O)
      -> topic-model.assign       topic id and label from the shared online topic model
      -> vector-store.upsert_articles
                                  story ids assigned and points written (durable before we go on)
      -> news.scored              ScoredArticle per item, every send confirmed by the broker
      -> acknowledge              only now; a crash before this redelivers, and the writes
                                  above are idempotent, so nothing is lost or counted twice

A batch the *models* fail on is retried one message at a time; a message that keeps
failing is negatively acknowledged until its redelivery count reaches ``max_redeliveries``,
then goes to the dead-letter topic with the reason. A failure *after* the models (the store,
the topic model or the broker unreachable) is no fault of the messages: the loop ends, the
actor restarts and the unacknowledged batch is redelivered, so no good message is
dead-lettered because a dependency was briefly down.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pulsar
import ray

from actors.common import (
    ACTOR_OPTIONS,
    BatchSender,
    FaultHooks,
    consume_batches,
    dead_letter,
    supervised_thread,
)
from cluster.records import NewsItem, ScoredArticle
from cluster.settings import BtcpulseSettings
from cluster.topics import Topics, connect, create_producer, subscribe

log = logging.getLogger(__name__)

SUBSCRIPTION = "analysis"
# How long a batch waits on the topic model or the store before the actor gives up and restarts.
CALL_TIMEOUT_S = 120.0
#: Where a batch's time goes, summed in ``stats()["seconds"]``: the models, the topic model's
#: call, the store's (story assignment and the write), the scored articles' sends, the acks.
PHASES = ("models", "topics", "store", "publish", "ack")


def model_env() -> dict[str, str]:
    """Environment for an analysis actor's process, set before torch loads OpenMP.

    ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads sleep between parallel regions instead of
    spinning. The stage shares its cores with the broker, Serve and the other stages; with
    spinning, one thread descheduled kept the others burning CPU at each barrier (analyze at
    batch 8 with a competing process: 26 items/s spinning, 36 passive; alone 56 vs 54; see
    bench/NOTES.md). An ``OMP_WAIT_POLICY`` already in the environment is kept.
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def analyzer_for(settings: BtcpulseSettings) -> Any:
    """The analysis models (:class:`models.pipeline.Analyzer`) as the settings configure them:
    what every analysis actor runs, and what the benchmarks time as its ceiling."""
    from models.pipeline import Analyzer

    return Analyzer(
        embedding_model=settings.embedding_model,
        device=settings.device,
        backend=settings.embed_backend,
        sentiment_model=settings.sentiment_model,
        sentiment_backend=settings.sentiment_backend,
        category_threshold=settings.category_threshold,
        batch_size=settings.embed_batch_size,
        max_tokens=settings.batch_max_tokens,
    )


def model_threads(settings: BtcpulseSettings, cpus: int | None = None) -> int:
    """CPU threads for one analysis actor's models.

    ``settings.analysis_threads`` when set; else this node's CPUs shared by the pool's largest
    size. Ray sets ``OMP_NUM_THREADS`` to an actor's ``num_cpus`` (1 by default), which would
    leave a one-actor pool's models on one core of the machine.
    """
    if settings.analysis_threads is not None:
        return settings.analysis_threads
    n = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return max(1, n // settings.pool_max)


class ModelError(RuntimeError):
    """The models failed on a batch (its cause is the model's exception)."""


class AnalyzerLike(Protocol):
    @property
    def name(self) -> str: ...

    def analyze(self, texts: list[str]) -> Any: ...


@dataclass(frozen=True)
class Analysis:
    """The models' output for a batch, before the stateful stages (topics, stories)."""

    items: list[NewsItem]
    vectors: np.ndarray
    fields: list[dict[str, Any]]  # per item: the ScoredArticle fields the models decided


def analyze(items: Sequence[NewsItem], analyzer: AnalyzerLike) -> Analysis:
    """Run the stateless models over ``items`` (pure: no I/O)."""
    result = analyzer.analyze([item.text for item in items])
    fields = []
    for i in range(len(items)):
        cats = result.categories[i]
        fields.append(
            {
                "sentiment": float(result.sentiment.scores[i]),
                "label": str(result.sentiment.labels[i]),
                "confidence": float(result.sentiment.confidence[i]),
                "categories": list(cats),
                "category_scores": [round(float(v), 4) for v in cats.values()],
            }
        )
    return Analysis(items=list(items), vectors=result.vectors, fields=fields)


def score(
    analysis: Analysis, topics: Sequence[dict[str, Any]], story_ids: Sequence[str], model: str
) -> list[ScoredArticle]:
    """The scored articles of a batch, from the models' fields, topics and story ids."""
    return [
        ScoredArticle.from_news(
            item,
            model=model,
            topic_id=int(topic["topic_id"]),
            topic_label=str(topic["label"]),
            story_id=story,
            **fields,
        )
        for item, fields, topic, story in zip(analysis.items, analysis.fields, topics, story_ids, strict=True)
    ]


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
        "confidence": article.confidence,
        "categories": article.categories,
        "category_scores": article.category_scores,
        "topic_id": article.topic_id,
        "topic_label": article.topic_label,
        "story_id": article.story_id,
        "analyzed_at": article.analyzed_at,
    }


@ray.remote(num_cpus=1, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class AnalysisConsumer:
    """Ray actor around :func:`analyze`; subscribes to news.raw with a shared subscription."""

    def __init__(self, settings: BtcpulseSettings, store: Any, topic_model: Any) -> None:
        from models.device import torch_threads

        self._settings = settings
        self._store = store
        self._topic_model = topic_model
        self._stats: Counter[str] = Counter()
        self._seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._threads = torch_threads(model_threads(settings))  # before the models: ONNX reads it
        self._last_batch_at = 0.0
        self._stop = threading.Event()
        self._faults = FaultHooks(settings.fault_injection, "analysis")
        self._analyzer = analyzer_for(settings)
        if self._analyzer.dim != settings.embedding_dim:
            raise ValueError(
                f"embedding model has dim {self._analyzer.dim}, settings say {settings.embedding_dim}"
            )
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
                item = self._topics.news_raw.decode(msg.data())
            except (ValueError, TypeError) as exc:
                self._dead(msg, f"undecodable NewsItem: {exc}")
                continue
            try:
                # Another producer's message may carry texts no collector would have kept.
                bounded = item.bounded(self._settings.max_title_chars, self._settings.max_summary_chars)
            except ValueError as exc:
                self._dead(msg, f"oversized NewsItem: {exc}")
                continue
            if bounded is not item:
                self._stats["oversized_cut"] += 1
            good.append((msg, bounded))
        if not good:
            return
        try:
            self._write(good, self._analyze([item for _, item in good]))
            return
        except ModelError as exc:  # isolate the message that causes it
            if len(good) == 1:
                self._failed(good[0][0], exc.__cause__ or exc)
                return
            log.warning("models failed on a batch of %d (%s); retrying one by one", len(good), exc)
        for pair in good:
            try:
                analysis = self._analyze([pair[1]])
            except ModelError as exc:
                self._failed(pair[0], exc.__cause__ or exc)
                continue
            self._write([pair], analysis)

    def _analyze(self, items: list[NewsItem]) -> Analysis:
        t0 = time.perf_counter()
        try:
            self._faults.check_texts([item.text for item in items])
            return analyze(items, self._analyzer)
        except Exception as exc:
            raise ModelError(str(exc)) from exc
        finally:
            self._seconds["models"] += time.perf_counter() - t0

    def _write(self, batch: list[tuple[pulsar.Message, NewsItem]], analysis: Analysis) -> None:
        """Topics, stories, store, broker, then acknowledge. Any failure here propagates: the
        actor restarts and the batch is redelivered (the writes are idempotent)."""
        texts = [item.text for item in analysis.items]
        ts = [item.published_ts for item in analysis.items]
        t0 = time.perf_counter()
        topics = ray.get(self._topic_model.assign.remote(texts, analysis.vectors, ts), timeout=CALL_TIMEOUT_S)
        t1 = time.perf_counter()
        ids = [item.id for item in analysis.items]
        articles = score(analysis, topics, ids, self._analyzer.name)  # story ids come next
        story_ids = ray.get(
            self._store.upsert_articles.remote(ids, analysis.vectors, [payload(a) for a in articles]),
            timeout=CALL_TIMEOUT_S,
        )
        t2 = time.perf_counter()
        for article, story in zip(articles, story_ids, strict=True):
            self._scored.send(dataclasses.replace(article, story_id=story), key=article.id)
        self._scored.wait()
        t3 = time.perf_counter()
        self._faults.after_write()
        for msg, _ in batch:
            self._consumer.acknowledge(msg)
        for phase, dt in zip(PHASES[1:], (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3), strict=True):
            self._seconds[phase] += dt
        self._stats["processed"] += len(batch)
        self._stats["batches"] += 1
        self._last_batch_at = time.time()

    def _failed(self, msg: pulsar.Message, exc: BaseException) -> None:
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
        return {
            **self._stats,
            "last_batch_at": self._last_batch_at,
            "model": self._analyzer.name,
            "threads": self._threads,
            "seconds": {p: round(self._seconds[p], 3) for p in PHASES},
        }

    def node_id(self) -> str:
        """The Ray node this actor runs on (the pool places members by it)."""
        return str(ray.get_runtime_context().get_node_id())

    def inject_fault(self, kind: str, arg: str = "") -> None:
        """Arm a :class:`FaultHooks` fault (only with ``settings.fault_injection``)."""
        self._faults.arm(kind, arg)

    def stop(self) -> None:
        """Stop receiving and close cleanly (unacknowledged messages go back to the broker)."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()

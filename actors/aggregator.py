"""The aggregator: scored news and prices in, time windows out.

    news.scored + prices        one shared subscription over the three topics, batched
    + deadletter                (dead letters are kept for GET /api/deadletters)
      -> decode                 per topic; a message that does not decode -> deadletter;
                                prices of another symbol than settings.price_symbol are skipped
      -> AggregatesStore        rows kept once per id (a redelivery changes no count)
      -> aggregates             the 1-minute windows the batch touched, recomputed and published
      -> acknowledge            after the store commit and the broker's confirmations

It alone owns the aggregates store; the serve layer queries windows of any step through
:meth:`AggregatorConsumer.series`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import pulsar
import ray

from actors.common import ACTOR_OPTIONS, BatchSender, consume_batches, dead_letter, supervised_thread
from cluster.aggregates import AggregatesStore, Totals
from cluster.records import DeadLetter, PriceTick, ScoredArticle, WindowAggregate
from cluster.settings import BtcpulseSettings
from cluster.topics import Topics, connect, create_producer, subscribe

log = logging.getLogger(__name__)

NAME = "aggregator"
SUBSCRIPTION = "aggregator"
WINDOW_S = 60


def touched_windows(times: list[float], step_s: int = WINDOW_S) -> list[tuple[float, float]]:
    """The distinct ``[start, end)`` windows of ``step_s`` that hold any of ``times``."""
    starts = sorted({int(t // step_s) * step_s for t in times})
    return [(float(s), float(s + step_s)) for s in starts]


@ray.remote(num_cpus=0, max_concurrency=8, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class AggregatorConsumer:
    def __init__(self, settings: BtcpulseSettings) -> None:
        self._settings = settings
        self._stats: Counter[str] = Counter()
        self._last_batch_at = 0.0
        self._stop = threading.Event()
        self._store = AggregatesStore(settings.state_dir / "aggregates" / "aggregates.sqlite")
        self._topics = Topics.from_settings(settings)
        self._client = connect(settings)
        self._consumer = subscribe(
            self._client,
            [self._topics.news_scored, self._topics.prices, self._topics.deadletter],
            SUBSCRIPTION,
            settings,
            batch_size=1000,
        )
        self._out = BatchSender(create_producer(self._client, self._topics.aggregates))
        self._dlq = create_producer(self._client, self._topics.deadletter)
        self._thread = supervised_thread(
            lambda: consume_batches(self._consumer, self._handle, self._stop), "aggregator"
        )

    def _handle(self, msgs: list[pulsar.Message]) -> None:
        articles: list[ScoredArticle] = []
        ticks: list[PriceTick] = []
        letters: list[DeadLetter] = []
        decoded: list[pulsar.Message] = []
        for msg in msgs:
            topic = msg.topic_name()
            try:
                if topic == self._topics.deadletter.name:
                    letters.append(self._topics.deadletter.decode(msg.data()))
                elif topic == self._topics.prices.name:
                    tick = self._topics.prices.decode(msg.data())
                    if tick.symbol == self._settings.price_symbol:
                        ticks.append(tick)
                    else:
                        self._stats["other_symbols"] += 1
                else:
                    articles.append(self._topics.news_scored.decode(msg.data()))
                decoded.append(msg)
            except (ValueError, TypeError) as exc:
                # A broken dead letter is dropped, not dead-lettered again (that would loop).
                if topic != self._topics.deadletter.name:
                    dead_letter(self._dlq, msg, f"undecodable on {topic}: {exc}", msg.redelivery_count())
                else:
                    log.error("dropped an undecodable dead letter %s: %s", msg.message_id(), exc)
                self._consumer.acknowledge(msg)
                self._stats["dead_lettered"] += 1
        new_times = self._store.add_articles(articles) + self._store.add_prices(ticks)
        self._stats["dead_letters"] += self._store.add_deadletters(letters)
        # windows: the 1-minute buckets these new rows fell in, recomputed from the store
        for start, end in touched_windows(new_times):
            for window in self._store.series(start, end, WINDOW_S):
                self._out.send(window)
        self._out.wait()
        for msg in decoded:
            self._consumer.acknowledge(msg)
        self._stats["articles"] += len(articles)
        self._stats["prices"] += len(ticks)
        self._stats["duplicates"] += len(articles) + len(ticks) - len(new_times)
        self._last_batch_at = time.time()

    # -- queries (serve layer) -----------------------------------------------------------
    def series(self, start: float, end: float, step_s: int) -> list[WindowAggregate]:
        return self._store.series(start, end, step_s)

    def deadletters(self, limit: int) -> list[DeadLetter]:
        return self._store.deadletters(limit)

    def totals(self) -> Totals:
        return self._store.totals()

    def stats(self) -> dict[str, Any]:
        return {**self._stats, "last_batch_at": self._last_batch_at}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()
        self._store.close()

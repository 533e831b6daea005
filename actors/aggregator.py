"""The aggregator: scored news and prices in, time windows out.

    news.scored + prices        one shared subscription over the three topics, batched
    + deadletter                (dead letters are kept for GET /api/deadletters)
      -> decode                 per topic; a message that does not decode -> deadletter;
                                prices of another symbol than settings.price_symbol are skipped
      -> AggregatesStore        rows kept once per id (a redelivery changes no count)
      -> BurstDetector          the new articles only; events that opened, peaked or closed
      -> events                 each such event (same id each time), stored, and POSTed to the
                                webhook when one is configured
      -> aggregates             the 1-minute windows the batch touched, recomputed and published
      -> acknowledge            after the store commit and the broker's confirmations

Burst detection runs on event time (the articles' publication times, the newest seen is
"now"), so a replay of 2022 finds 2022's events. Its state is memory; on a restart it is
rebuilt from the stored articles of the last baseline period.

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

from actors.common import (
    ACTOR_OPTIONS,
    BatchSender,
    FaultHooks,
    consume_batches,
    dead_letter,
    logical_topic,
    supervised_thread,
)
from actors.webhook import WebhookSender
from cluster.aggregates import AggregatesStore, Totals
from cluster.records import (
    DeadLetter,
    NewsEvent,
    PriceTick,
    ScoredArticle,
    WindowAggregate,
    format_time,
    to_ts,
)
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


def event_record(event: Any) -> NewsEvent:
    """A :class:`models.bursts.Event` (epoch seconds) as the events topic's record."""
    return NewsEvent(
        id=event.id,
        kind=event.kind,
        key=event.key,
        label=event.label,
        keywords=list(event.keywords),
        start=format_time(event.start),
        peak=format_time(event.peak),
        end=format_time(event.end) if event.end is not None else None,
        peak_value=float(event.peak_value),
        baseline=float(event.baseline),
        score=float(event.score),
        examples=list(event.examples),
    )


def distinct_events(events: list[NewsEvent]) -> list[NewsEvent]:
    """:func:`models.bursts.dedupe_events` over stored events, strongest first."""
    from models.bursts import Event, dedupe_events

    by_id = {e.id: e for e in events}
    plain = [
        Event(
            id=e.id,
            kind=e.kind,
            key=e.key,
            label=e.label,
            keywords=e.keywords,
            start=to_ts(e.start),
            peak=to_ts(e.peak),
            end=to_ts(e.end) if e.end else None,
            peak_value=e.peak_value,
            baseline=e.baseline,
            score=e.score,
            examples=e.examples,
        )
        for e in events
    ]
    return [by_id[e.id] for e in dedupe_events(plain)]


def topic_keywords(label: str) -> list[str]:
    """The keywords a topic label was made of (labels join them with ", ")."""
    return [w.strip() for w in label.split(",") if w.strip()]


@ray.remote(num_cpus=0, max_concurrency=8, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class AggregatorConsumer:
    def __init__(self, settings: BtcpulseSettings) -> None:
        self._settings = settings
        self._stats: Counter[str] = Counter()
        self._last_batch_at = 0.0
        self._stop = threading.Event()
        self._faults = FaultHooks(settings.fault_injection, "aggregator")
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
        self._events_out = BatchSender(create_producer(self._client, self._topics.events))
        self._dlq = create_producer(self._client, self._topics.deadletter)
        self._webhook = WebhookSender(settings.event_webhook_url) if settings.event_webhook_url else None
        self._bursts = self._new_detector()
        self._now = 0.0  # event time: the newest publication time seen
        self._rebuild_bursts()
        self._thread = supervised_thread(
            lambda: consume_batches(self._consumer, self._handle, self._stop), "aggregator"
        )

    def _new_detector(self) -> Any:
        from models.bursts import BurstDetector

        return BurstDetector(
            step_s=self._settings.burst_step_s,
            baseline_windows=self._settings.burst_baseline_windows,
            min_count=self._settings.burst_min_count,
        )

    def _rebuild_bursts(self) -> None:
        last = self._store.totals().last_ts
        if last is None:
            return
        span = (self._settings.burst_baseline_windows + 2) * self._settings.burst_step_s
        for ts, article_id, topic_id, topic_label, title, sentiment in self._store.articles_since(
            last - span
        ):
            self._observe(ts, article_id, topic_id, topic_label, title, sentiment)
        # Stored and published again (same ids: idempotent): a crash after the articles were
        # committed but before their events were may have left these unwritten.
        # (Not to the webhook: a restart would POST a baseline period's events again.)
        self._emit_events([event_record(e) for e in self._bursts.advance(self._now)], webhook=False)
        self._events_out.wait()

    def _emit_events(self, events: list[NewsEvent], *, webhook: bool) -> int:
        """Store ``events`` (upserts by id) and send them on the events topic (and the webhook);
        the caller waits for the broker. Returns how many."""
        if events:
            self._store.upsert_events(events)
            for event in events:
                self._events_out.send(event, key=event.id)
                if webhook and self._webhook:
                    self._webhook.send(event.to_dict())
        return len(events)

    def _observe(
        self, ts: float, article_id: str, topic_id: int, topic_label: str, title: str, sentiment: float
    ) -> None:
        from models.bursts import keywords_of

        self._bursts.observe(
            ts, article_id, topic_id, topic_label, topic_keywords(topic_label), keywords_of(title), sentiment
        )
        self._now = max(self._now, ts)

    def _detect(self, new: list[ScoredArticle]) -> list[NewsEvent]:
        for a in new:
            self._observe(a.published_ts, a.id, a.topic_id, a.topic_label, a.title, a.sentiment)
        return [event_record(e) for e in self._bursts.advance(self._now)] if new else []

    def _handle(self, msgs: list[pulsar.Message]) -> None:
        articles: list[ScoredArticle] = []
        ticks: list[PriceTick] = []
        letters: list[DeadLetter] = []
        decoded: list[pulsar.Message] = []
        for msg in msgs:
            topic = logical_topic(msg.topic_name())  # a partitioned topic names its partition
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
        new_articles = self._store.add_new_articles(articles)
        new_prices = self._store.add_prices(ticks)
        new_count = len(new_articles) + len(new_prices)
        self._stats["dead_letters"] += self._store.add_deadletters(letters)
        self._stats["event_updates"] += self._emit_events(self._detect(new_articles), webhook=True)
        # windows: the 1-minute buckets this batch's rows fell in, recomputed from the store;
        # redelivered rows count too, since their windows may not have gone out before a crash
        times = [a.published_ts for a in articles] + [t.ts_epoch for t in ticks]
        for start, end in touched_windows(times):
            for window in self._store.series(start, end, WINDOW_S):
                self._out.send(window)
        self._out.wait()
        self._events_out.wait()
        self._faults.after_write()
        for msg in decoded:
            self._consumer.acknowledge(msg)
        self._stats["articles"] += len(articles)
        self._stats["prices"] += len(ticks)
        self._stats["duplicates"] += len(articles) + len(ticks) - new_count
        self._stats["batches"] += 1
        self._last_batch_at = time.time()

    # -- queries (serve layer) -----------------------------------------------------------
    def series(self, start: float, end: float, step_s: int) -> list[WindowAggregate]:
        return self._store.series(start, end, step_s)

    def deadletters(self, limit: int) -> list[DeadLetter]:
        return self._store.deadletters(limit)

    def events(self, start: float, end: float, limit: int, distinct: bool = True) -> list[NewsEvent]:
        """Events overlapping ``[start, end)``, strongest first; ``distinct`` keeps one per
        happening (a crash bursts as several keywords and a topic at once)."""
        found = self._store.events(start, end, limit * 5 if distinct else limit)
        return distinct_events(found)[:limit] if distinct else found

    def totals(self) -> Totals:
        return self._store.totals()

    def stats(self) -> dict[str, Any]:
        webhook = {f"webhook_{k}": v for k, v in self._webhook.stats.items()} if self._webhook else {}
        return {**self._stats, **webhook, "last_batch_at": self._last_batch_at}

    def inject_fault(self, kind: str, arg: str = "") -> None:
        """Arm a :class:`FaultHooks` fault (only with ``settings.fault_injection``)."""
        self._faults.arm(kind, arg)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._webhook:
            self._webhook.close()
        self._client.close()
        self._store.close()

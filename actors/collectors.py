"""Live collector actors (producers): news sources and the BTC price stream.

    NewsCollector
      sources file (or the defaults) -> one FeedPoller per source, polled when due,
      a few at a time (a slow source never delays the others)
      -> news.raw                   NewsItem per new item, keyed by article id
      -> broker confirms            BatchSender.wait()
      -> FeedPoller.commit          recorded in the SeenStore only now: a crash before this
                                    republishes (idempotent downstream), never loses
      -> health                     SourceHealth per source, for GET /api/sources

The pollers own every network and parsing concern (actors/feeds.py); the actor owns threads,
Pulsar and supervision.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import ray

from actors.common import ACTOR_OPTIONS, BatchSender, supervised_thread
from actors.feeds import FeedPoller, SeenStore
from cluster.settings import BtcpulseSettings
from cluster.sources import SourceConfig
from cluster.topics import Topics, connect, create_producer

log = logging.getLogger(__name__)

NEWS_COLLECTOR = "news-collector"
# Sources polled at once; each poll is one bounded HTTP request.
POLL_WORKERS = 4
TICK_S = 1.0


@ray.remote(num_cpus=0, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class NewsCollector:
    def __init__(self, settings: BtcpulseSettings, sources: list[SourceConfig]) -> None:
        self._stop = threading.Event()
        self._store = SeenStore(settings.state_dir / "collectors" / "seen.sqlite")
        self._pollers: list[FeedPoller] = []
        self._unsupported: list[dict[str, Any]] = []
        for config in sources:
            try:
                poller = FeedPoller(
                    config,
                    httpx.Client(trust_env=False),
                    self._store,
                    max_title_chars=settings.max_title_chars,
                    max_summary_chars=settings.max_summary_chars,
                    max_future_skew_s=settings.max_future_skew_s,
                )
            except ValueError as exc:  # a kind without a collector: shown, not retried
                self._unsupported.append(
                    {"name": config.name, "kind": config.kind, "enabled": False, "last_error": str(exc)}
                )
                continue
            self._pollers.append(poller)
        self._client = connect(settings)
        self._producer = create_producer(self._client, Topics.from_settings(settings).news_raw)
        self._pool = ThreadPoolExecutor(POLL_WORKERS, thread_name_prefix="poll")
        self._thread = supervised_thread(self._loop, "news-collector")

    def _loop(self) -> None:
        running: dict[str, Future[None]] = {}
        while not self._stop.is_set():
            now = datetime.now(UTC)
            for poller in self._pollers:
                name = poller.config.name
                if name in running and not running[name].done():
                    continue
                if name in running:
                    running.pop(name).result()  # re-raise what the poll thread could not handle
                if poller.due(now):
                    running[name] = self._pool.submit(self._poll_once, poller, now)
            self._stop.wait(TICK_S)

    def _poll_once(self, poller: FeedPoller, now: datetime) -> None:
        result = poller.poll(now)
        if not result.items:
            return
        sender = BatchSender(self._producer)
        for item in result.items:
            sender.send(item, key=item.id)
        try:
            sender.wait()
        except RuntimeError as exc:  # not confirmed: keep them uncommitted, the next poll resends
            log.warning("%s: publishing failed (%s); will retry", poller.config.name, exc)
            return
        poller.commit(result.items, time.time())

    # -- control -------------------------------------------------------------------------
    def health(self) -> list[dict[str, Any]]:
        return [p.health.to_dict() for p in self._pollers] + list(self._unsupported)

    def stats(self) -> dict[str, Any]:
        rows = [p.health for p in self._pollers]
        return {
            "sources": len(rows),
            "new": sum(h.new for h in rows),
            "errors": sum(h.errors for h in rows),
            "failing": sorted(h.name for h in rows if h.consecutive_failures),
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        self._store.close()

"""Live collector actors (producers): news sources and the BTC price stream.

    NewsCollector
      sources file (or the defaults) -> one FeedPoller per source, polled when due,
      a few at a time (a slow source never delays the others)
      -> news.raw                   NewsItem per new item, keyed by article id
      -> broker confirms            BatchSender.wait()
      -> FeedPoller.commit          recorded in the SeenStore only now: a crash before this
                                    republishes (idempotent downstream), never loses
      -> health                     SourceHealth per source, for GET /api/sources

    PriceCollector
      exchange WebSocket (Coinbase, then Kraken, then Binance; REST while all are stale)
      -> PriceStream                ticks, de-duplicated by trade id
      -> iter_bars                  1-second OHLCV bars (see actors/prices.py for why bars)
      -> prices                     PriceTick with interval_s 1, keyed by bar id

The pollers and the stream own every network and parsing concern (actors/feeds.py,
actors/prices.py); the actors own threads, Pulsar and supervision.
"""

from __future__ import annotations

import asyncio
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
from actors.prices import (
    PriceStream,
    RestEndpoint,
    SecondBars,
    StreamEndpoint,
    default_endpoints,
    iter_bars,
)
from cluster.price_sources import PriceSources
from cluster.records import format_time
from cluster.settings import BtcpulseSettings
from cluster.sources import SourceConfig
from cluster.topics import Topics, connect, create_producer

log = logging.getLogger(__name__)

NEWS_COLLECTOR = "news-collector"
PRICE_COLLECTOR = "price-collector"
# Sources polled at once; each poll is one bounded HTTP request.
POLL_WORKERS = 4
TICK_S = 1.0


@ray.remote(num_cpus=0, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class NewsCollector:
    def __init__(self, settings: BtcpulseSettings, sources: list[SourceConfig]) -> None:
        self._stop = threading.Event()
        self._store = SeenStore(settings.state_dir / "collectors" / "seen.sqlite")
        # Every kind a SourceConfig accepts has a poller.
        self._pollers = [
            FeedPoller(
                config,
                httpx.Client(trust_env=False),
                self._store,
                max_title_chars=settings.max_title_chars,
                max_summary_chars=settings.max_summary_chars,
                max_future_skew_s=settings.max_future_skew_s,
            )
            for config in sources
        ]
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
        return [p.health.to_dict() for p in self._pollers]

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


# What to send after connecting, for exchanges the built-in endpoints do not cover.
_SUBSCRIBE = {
    "bitstamp": ('{"event": "bts:subscribe", "data": {"channel": "live_trades_btcusd"}}',),
    "gemini": ('{"type": "subscribe", "subscriptions": [{"name": "l2", "symbols": ["BTCUSD"]}]}',),
}


def price_endpoints(config: PriceSources) -> tuple[list[StreamEndpoint] | None, list[RestEndpoint] | None]:
    """The sources file's ``[prices]`` as stream/REST endpoints (``None``: the built-in ones)."""
    builtin = {e.exchange: e.subscribe for e in default_endpoints()} | _SUBSCRIBE
    streams = (
        [
            StreamEndpoint(
                s.exchange,
                s.url,
                s.subscribe if s.subscribe is not None else builtin.get(s.exchange, ()),
                frozenset(s.symbols) if s.symbols is not None else None,
                s.name,
            )
            for s in config.streams
        ]
        if config.streams is not None
        else None
    )
    rest = (
        [RestEndpoint(r.exchange, r.url, r.symbol) for r in config.rest] if config.rest is not None else None
    )
    return streams, rest


@ray.remote(num_cpus=0, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class PriceCollector:
    """The BTC price stream as 1-second bars on the prices topic (default endpoints unless given)."""

    def __init__(
        self,
        settings: BtcpulseSettings,
        endpoints: list[StreamEndpoint] | None = None,
        rest: list[RestEndpoint] | None = None,
        stale_after_s: float = 15.0,
    ) -> None:
        self._stop = threading.Event()
        self._bars_sent = 0
        self._stream = PriceStream(endpoints, rest=rest, stale_after_s=stale_after_s)
        self._client = connect(settings)
        self._producer = create_producer(self._client, Topics.from_settings(settings).prices)
        self._thread = supervised_thread(lambda: asyncio.run(self._main()), "price-collector")

    async def _main(self) -> None:
        sender = BatchSender(self._producer)
        async with self._stream as stream:
            # bars: PriceTick(interval_s=1), one per (exchange, symbol, second)
            async for bar in iter_bars(stream, SecondBars(), flush_every_s=0.5):
                sender.send(bar, key=bar.id)
                # One bar a second at most: confirm each, so a crash loses at most the open one.
                await asyncio.to_thread(sender.wait)
                self._bars_sent += 1
                if self._stop.is_set():
                    break

    def health(self) -> list[dict[str, Any]]:
        h = self._stream.health()
        return [
            {
                "name": f"BTC price ({h.connected or 'none'})",
                "kind": "price-stream",
                "enabled": True,
                "fetched": h.messages,
                "new": self._bars_sent,
                "duplicates": h.duplicates,
                "rejected": h.filtered,
                "errors": h.errors + h.rest_errors,
                "last_status": h.mode,
                "last_success_at": format_time(h.last_tick_at) if h.last_tick_at else None,
                "last_error": h.last_error,
                "consecutive_failures": 0 if h.mode == "stream" else 1,
            }
        ]

    def stats(self) -> dict[str, Any]:
        return {
            "bars": self._bars_sent,
            **{k: v for k, v in self._stream.health().to_dict().items() if k != "last_error"},
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()

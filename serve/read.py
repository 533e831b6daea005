"""The read side, shared by the API routes and the dashboard sessions of one replica.

It never writes: vectors and payloads come from the vector-store actor, windows from the
aggregator actor, and query embeddings from a model loaded once in this process. Text searches
that arrive together are embedded and searched together (:class:`QueryBatcher`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import ray

from actors.common import named_actors
from actors.pool import POOL
from cluster.aggregates import Totals
from cluster.records import DeadLetter, NewsEvent, WindowAggregate
from cluster.settings import BtcpulseSettings
from cluster.vectors import SearchFilter, VectorHit
from serve.live import LiveFeed

log = logging.getLogger(__name__)

VECTOR_STORE = "vector-store"
AGGREGATOR = "aggregator"
TOPIC_MODEL = "topic-model"
COLLECTORS = ("news-collector", "price-collector")


def query_backend(settings: BtcpulseSettings) -> str:
    """The backend of the replica's query embedder: ``query_backend`` when set; else the one
    the stored texts were embedded with (``embed_backend``, resolved on the replica's device),
    so that a query's vector is made as theirs were; except ``onnx`` (fp32) for torch on the
    CPU: the same vectors to 1e-4 cosine, one headline 6.7 ms vs 14.6 ms on one thread
    (``python -m bench.search``, its query-embedding rows)."""
    from models.device import pick_device, resolve_backend

    if settings.query_backend not in (None, "auto"):
        return settings.query_backend
    backend = resolve_backend(settings.embed_backend, settings.device)
    if backend == "torch" and pick_device(settings.device) == "cpu":
        return "onnx"
    return backend


def epoch(t: datetime | None) -> float | None:
    """Seconds since the epoch; a time without zone is taken as UTC."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


#: Most text queries embedded and searched together (see :class:`QueryBatcher`).
QUERY_BATCH_MAX = 32


@dataclass(slots=True)
class _Query:
    text: str
    k: int
    flt: SearchFilter
    future: asyncio.Future[list[VectorHit]]


class QueryBatcher:
    """Text searches that arrive together are served together.

    One worker per replica takes the oldest waiting query and every other one already waiting
    (at most ``max_batch``; it never waits for more, so a lone query pays nothing extra),
    embeds them in one thread hop and sends them to the vector store in one actor call. Under
    concurrent load the queue fills while a batch is served, so the per-request costs (the
    thread hop, the actor call on both sides, the model's own per-pass overhead) are paid once
    per batch. The store searches one batch while the next is embedded.

    ``embed_many(texts)`` must give each text the vector it would get alone (every
    :class:`models.embedder.Embedder` backend does). A batch that fails fails each of its
    queries with the same error; the worker goes on.
    """

    def __init__(
        self,
        embed_many: Callable[[list[str]], np.ndarray],
        search_many: Callable[[np.ndarray, list[int], list[SearchFilter]], Awaitable[list[list[VectorHit]]]],
        max_batch: int = QUERY_BATCH_MAX,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._embed_many = embed_many
        self._search_many = search_many
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Query] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._searches: set[asyncio.Task[None]] = set()
        #: batches served and queries in them (the mean batch size is their ratio)
        self.batches = 0
        self.queries = 0

    async def search(self, text: str, k: int, flt: SearchFilter) -> list[VectorHit]:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        elif loop is not self._worker.get_loop():
            # The queue and its worker belong to another event loop: serve this one alone.
            vectors = await asyncio.to_thread(self._embed_many, [text])
            return (await self._search_many(vectors, [k], [flt]))[0]
        assert self._queue is not None
        future: asyncio.Future[list[VectorHit]] = loop.create_future()
        self._queue.put_nowait(_Query(text, k, flt, future))
        return await future

    async def _run(self, queue: asyncio.Queue[_Query]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [q for q in batch if not q.future.done()]  # a caller that went away
            if not batch:
                continue
            self.batches += 1
            self.queries += len(batch)
            try:
                vectors = await asyncio.to_thread(self._embed_many, [q.text for q in batch])
            except Exception as exc:
                _fail(batch, exc)
                continue
            task = asyncio.get_running_loop().create_task(self._serve(batch, vectors))
            self._searches.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._searches.discard)

    async def _serve(self, batch: list[_Query], vectors: np.ndarray) -> None:
        try:
            found = await self._search_many(vectors, [q.k for q in batch], [q.flt for q in batch])
            if len(found) != len(batch):
                raise RuntimeError(f"the store answered {len(found)} of {len(batch)} searches")
        except Exception as exc:
            _fail(batch, exc)
            return
        for q, hits in zip(batch, found, strict=True):
            if not q.future.done():
                q.future.set_result(hits)


def _fail(batch: list[_Query], exc: BaseException) -> None:
    for q in batch:
        if not q.future.done():
            q.future.set_exception(exc)


class ReadService:
    """Async reads over the stores; one per replica process."""

    def __init__(self, settings: BtcpulseSettings, *, load_model: bool = True) -> None:
        """``load_model=False`` defers the query model to the first search (the app's own tests
        build it without one); actor handles are looked up on first use either way, so the
        app can be built, and its HTTP layer checked, without a cluster."""
        self.settings = settings
        self._live: LiveFeed | None = None
        self._embedder: Any = None
        self._queries = QueryBatcher(self._embed_many, self._search_many)
        if load_model:
            self._embedder = self._load_embedder()

    def _load_embedder(self) -> Any:
        from models.device import torch_threads
        from models.embedder import Embedder

        # One thread: a query is one short sentence; the analysis actor owns the cores.
        torch_threads(1)
        s = self.settings
        return Embedder(s.embedding_model, device=s.device, backend=query_backend(s))

    @staticmethod
    def _connected() -> None:
        if not ray.is_initialized():  # Ray's calls would start a local Ray of their own
            raise RuntimeError("not connected to a Ray cluster")

    def _actor(self, name: str) -> Any:
        self._connected()
        return ray.get_actor(name, namespace=self.settings.ray_namespace)

    @functools.cached_property
    def _store(self) -> Any:
        return self._actor(VECTOR_STORE)

    @functools.cached_property
    def _aggregator(self) -> Any:
        return self._actor(AGGREGATOR)

    @functools.cached_property
    def _topic_model(self) -> Any:
        return self._actor(TOPIC_MODEL)

    def live(self) -> LiveFeed:
        """The replica's live feed (created on first use, on the serving event loop)."""
        if self._live is None:
            self._live = LiveFeed(self.settings, asyncio.get_running_loop())
        return self._live

    def _embed_many(self, texts: list[str]) -> np.ndarray:
        """Query vectors, each as it would be alone (runs in a thread, one batch at a time)."""
        if self._embedder is None:
            self._embedder = self._load_embedder()
        # Every backend gives a text the vector it gets alone (onnx-int8 by one pass per text).
        vectors: np.ndarray = self._embedder.encode(texts, batch_size=len(texts))
        return vectors

    async def _search_many(
        self, vectors: np.ndarray, ks: list[int], flts: list[SearchFilter]
    ) -> list[list[VectorHit]]:
        found: list[list[VectorHit]] = await self._store.search_many.remote(vectors, ks, flts)
        return found

    async def search(self, query: str, k: int, flt: SearchFilter) -> list[VectorHit]:
        return await self._queries.search(query, k, flt)

    async def latest(self, limit: int, flt: SearchFilter | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._store.latest.remote(limit, flt)
        return rows

    async def series(self, start: float, end: float, step_s: int) -> list[WindowAggregate]:
        windows: list[WindowAggregate] = await self._aggregator.series.remote(start, end, step_s)
        return windows

    async def deadletters(self, limit: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = await self._aggregator.deadletters.remote(limit)
        return letters

    async def events(self, start: float, end: float, limit: int, distinct: bool = True) -> list[NewsEvent]:
        events: list[NewsEvent] = await self._aggregator.events.remote(start, end, limit, distinct)
        return events

    async def topics(self) -> list[dict[str, Any]]:
        topics: list[dict[str, Any]] = await self._topic_model.topics.remote()
        return topics

    async def retrieve(self, ids: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._store.retrieve.remote(ids)
        return rows

    async def timeline(self, story_id: str, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._store.timeline.remote(story_id, limit)
        return rows

    async def similar(self, article_id: str, k: int, flt: SearchFilter) -> list[VectorHit] | None:
        """Articles most like a stored one (itself left out); ``None`` when it is not stored."""
        vectors: dict[str, Any] = await self._store.vectors.remote([article_id])
        if article_id not in vectors:
            return None
        hits: list[VectorHit] = await self._store.search.remote(vectors[article_id], k + 1, flt)
        return [h for h in hits if h.id != article_id][:k]

    async def actor_stats(self) -> dict[str, dict[str, Any]]:
        """Each named actor's ``stats()`` (an actor that does not answer in 5 s is left out)."""
        self._connected()
        names = [n for n in named_actors(self.settings.ray_namespace) if not n.startswith("replay")]
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            try:
                handle = self._actor(name)
                stats: Any = await asyncio.wait_for(handle.stats.remote(), timeout=5)
            except Exception as exc:  # restarting, or no stats method: skip it this time
                log.debug("no stats from %s: %s", name, exc)
                continue
            if isinstance(stats, dict):
                out[name] = stats
        return out

    async def pipeline(self) -> list[dict[str, Any]]:
        """Each consuming stage's health: its subscription's backlog on the broker, messages
        processed, and when it last finished a batch (epoch seconds, 0 if never)."""
        from cluster.pulsar_admin import subscription_backlog
        from cluster.topics import Topics

        topics = Topics.from_settings(self.settings)
        stages = [
            ("analysis", topics.news_raw.name, "analysis", "analysis-"),
            ("aggregator", topics.news_scored.name, "aggregator", "aggregator"),
        ]
        stats = await self.actor_stats()
        rows = []
        for stage, topic, subscription, prefix in stages:
            backlog = await asyncio.to_thread(subscription_backlog, self.settings, topic, subscription)
            mine = [v for k, v in stats.items() if k.startswith(prefix) and k != POOL]
            rows.append(
                {
                    "stage": stage,
                    "actors": len(mine),
                    "backlog": backlog.backlog if backlog else None,
                    "unacked": backlog.unacked if backlog else None,
                    "processed": sum(int(v.get("processed", v.get("articles", 0))) for v in mine),
                    "last_batch_at": max((float(v.get("last_batch_at", 0.0)) for v in mine), default=0.0),
                    "batches": sum(int(v.get("batches", 0)) for v in mine),
                    "seconds": _summed([v.get("seconds", {}) for v in mine]),
                }
            )
        return rows

    async def totals(self) -> Totals:
        totals: Totals = await self._aggregator.totals.remote()
        return totals

    async def sources(self) -> list[dict[str, Any]]:
        """Health of every live source, from the collector actors that run (none: [])."""
        rows: list[dict[str, Any]] = []
        for name in COLLECTORS:
            try:
                handle = self._actor(name)
            except ValueError:
                continue
            rows.extend(await handle.health.remote())
        return rows

    async def count(self) -> int:
        n: int = await self._store.count.remote()
        return n


def _summed(parts: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise sums of the actors' phase timings."""
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = round(out.get(key, 0.0) + float(value), 3)
    return out

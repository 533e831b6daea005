"""The read side, shared by the API routes and the dashboard sessions of one replica.

It never writes: vectors and payloads come from the vector-store actor, windows from the
aggregator actor, and query embeddings from a model loaded once in this process.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import ray

from cluster.aggregates import Totals
from cluster.records import DeadLetter, NewsEvent, WindowAggregate
from cluster.settings import BtcpulseSettings
from cluster.vectors import SearchFilter, VectorHit

VECTOR_STORE = "vector-store"
AGGREGATOR = "aggregator"
TOPIC_MODEL = "topic-model"
COLLECTORS = ("news-collector", "price-collector")


def epoch(t: datetime | None) -> float | None:
    """Seconds since the epoch; a time without zone is taken as UTC."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


class ReadService:
    """Async reads over the stores; one per replica process."""

    def __init__(self, settings: BtcpulseSettings) -> None:
        from models.device import torch_threads
        from models.embedder import Embedder

        self.settings = settings
        self._store = ray.get_actor(VECTOR_STORE, namespace=settings.ray_namespace)
        self._aggregator = ray.get_actor(AGGREGATOR, namespace=settings.ray_namespace)
        self._topic_model = ray.get_actor(TOPIC_MODEL, namespace=settings.ray_namespace)
        # One thread: a query is one short sentence; the analysis actor owns the cores.
        torch_threads(1)
        self._embedder = Embedder(
            settings.embedding_model, device=settings.device, backend=settings.embed_backend
        )
        self._embed_lock = asyncio.Lock()

    async def embed(self, text: str) -> Any:
        async with self._embed_lock:
            return (await asyncio.to_thread(self._embedder.encode, [text]))[0]

    async def search(self, query: str, k: int, flt: SearchFilter) -> list[VectorHit]:
        vector = await self.embed(query)
        hits: list[VectorHit] = await self._store.search.remote(vector, k, flt)
        return hits

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

    async def totals(self) -> Totals:
        totals: Totals = await self._aggregator.totals.remote()
        return totals

    async def sources(self) -> list[dict[str, Any]]:
        """Health of every live source, from the collector actors that run (none: [])."""
        rows: list[dict[str, Any]] = []
        for name in COLLECTORS:
            try:
                handle = ray.get_actor(name, namespace=self.settings.ray_namespace)
            except ValueError:
                continue
            rows.extend(await handle.health.remote())
        return rows

    async def count(self) -> int:
        n: int = await self._store.count.remote()
        return n

"""The vector-store actor: sole owner of the embedded Qdrant shard, and of story assignment.

Analysis actors write through it (``upsert_articles`` returns once the write is logged); the
serve layer reads through it. With ``QDRANT_URL`` set it fronts the server just the same.

Stories live here because every write passes through this one actor, in order: it is the
one place that sees all recent articles, so two analysis actors can never open two stories
for the same event. The tracker is memory only; on a restart it is rebuilt from the points
of the last window (their vectors and story ids are in the store).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray

from actors.common import ACTOR_OPTIONS
from cluster.settings import BtcpulseSettings
from cluster.vectors import SearchFilter, VectorHit, open_vector_store

NAME = "vector-store"
#: Points read back to rebuild the story tracker after a restart.
REBUILD_LIMIT = 200_000


def story_tracker(settings: BtcpulseSettings) -> Any:
    """An empty :class:`models.stories.StoryTracker` with the settings' window and threshold."""
    from models.stories import StoryTracker

    kwargs: dict[str, Any] = {"window_s": float(settings.story_window_s)}
    if settings.story_threshold is not None:
        kwargs["threshold"] = settings.story_threshold
    return StoryTracker(**kwargs)


@ray.remote(num_cpus=0, max_concurrency=8, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class VectorStoreActor:
    def __init__(self, settings: BtcpulseSettings, dim: int) -> None:
        self._store = open_vector_store(settings, dim)
        self._stories = story_tracker(settings)
        self._write_lock = threading.Lock()  # story assignment and its write, one batch at a time
        self._rebuild_s = self._rebuild(settings.story_window_s)

    def _rebuild(self, window_s: float) -> float:
        t0 = time.perf_counter()
        newest = self._store.latest(1)
        if newest:
            recent = self._store.recent(float(newest[0]["published_ts"]) - window_s, REBUILD_LIMIT)
            if recent.ids:
                order = np.argsort(recent.ts, kind="stable")  # oldest first, as they arrived
                self._stories.load(
                    [recent.ids[i] for i in order],
                    recent.vectors[order],
                    [recent.ts[i] for i in order],
                    [recent.story_ids[i] for i in order],
                )
        return time.perf_counter() - t0

    def upsert_articles(
        self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]
    ) -> list[str]:
        """Assign each article its story, write the points, return the story ids (in order).

        A redelivered article keeps the story it was given (the tracker remembers ids), and its
        point is overwritten with the same content: nothing counts twice.
        """
        ts = [float(p["published_ts"]) for p in payloads]
        with self._write_lock:
            story_ids = self._stories.assign(list(ids), vectors, ts)
            full = [{**p, "story_id": s} for p, s in zip(payloads, story_ids, strict=True)]
            self._store.upsert(ids, vectors, full)
        return story_ids

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> int:
        self._store.upsert(ids, vectors, payloads)
        return len(ids)

    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[VectorHit]:
        return self._store.search(vector, k, flt)

    def search_many(
        self, vectors: np.ndarray, ks: Sequence[int], flts: Sequence[SearchFilter | None]
    ) -> list[list[VectorHit]]:
        """Several searches in one call: row ``i`` of ``vectors`` with ``ks[i]`` and ``flts[i]``."""
        return self._store.search_many(vectors, ks, flts)

    def latest(self, limit: int, flt: SearchFilter | None = None) -> list[dict[str, Any]]:
        return self._store.latest(limit, flt)

    def retrieve(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return self._store.retrieve(ids)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by id (for "more like this article")."""
        return self._store.vectors(ids)

    def timeline(self, story_id: str, limit: int = 500) -> list[dict[str, Any]]:
        return self._store.timeline(story_id, limit)

    def count(self, flt: SearchFilter | None = None) -> int:
        return self._store.count(flt)

    def flush(self) -> None:
        self._store.flush()

    def ping(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {"points": self._store.count(), "story_rebuild_s": round(self._rebuild_s, 3)}

    def stop(self) -> None:
        self._store.close()

"""The vector-store actor: sole owner of the embedded Qdrant shard.

Analysis actors write through it (``upsert`` returns once the write is logged); the serve
layer reads through it. With ``QDRANT_URL`` set it fronts the server just the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import ray

from actors.common import ACTOR_OPTIONS
from cluster.settings import BtcpulseSettings
from cluster.vectors import SearchFilter, VectorHit, open_vector_store

NAME = "vector-store"


@ray.remote(num_cpus=0, max_concurrency=8, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class VectorStoreActor:
    def __init__(self, settings: BtcpulseSettings, dim: int) -> None:
        self._store = open_vector_store(settings, dim)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> int:
        self._store.upsert(ids, vectors, payloads)
        return len(ids)

    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[VectorHit]:
        return self._store.search(vector, k, flt)

    def latest(self, limit: int, flt: SearchFilter | None = None) -> list[dict[str, Any]]:
        return self._store.latest(limit, flt)

    def retrieve(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return self._store.retrieve(ids)

    def count(self, flt: SearchFilter | None = None) -> int:
        return self._store.count(flt)

    def flush(self) -> None:
        self._store.flush()

    def ping(self) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {"points": self._store.count()}

    def stop(self) -> None:
        self._store.close()

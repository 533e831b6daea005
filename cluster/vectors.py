"""The Qdrant connector: one interface over embedded qdrant-edge and a Qdrant server.

    QDRANT_URL unset     -> :class:`EdgeVectorStore`, Qdrant's engine in this process
                            (qdrant-edge-py), data under <state_dir>/qdrant/<collection>;
                            one process owns it (the vector-store actor).
    QDRANT_URL=http://…  -> :class:`ClientVectorStore` through qdrant-client.
    QDRANT_URL=:memory:  -> qdrant-client's in-process mode, which speaks the same API (tests).

Points are keyed by the article id (a UUID derived from the canonical URL), so an upsert
of a redelivered article overwrites the same point and counts nothing twice.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.settings import BtcpulseSettings

# Payload fields with an index: time ranges, ordering by time, and exact-match filters
# (``categories`` is a list: a point matches when any of its categories does).
FLOAT_FIELDS = ("published_ts", "sentiment")
KEYWORD_FIELDS = ("source", "sentiment_label", "categories", "story_id")
INTEGER_FIELDS = ("topic_id",)


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Restrictions on a search or a listing; ``None`` means no restriction."""

    start_ts: float | None = None
    end_ts: float | None = None
    source: str | None = None
    sentiment_label: str | None = None
    category: str | None = None
    topic_id: int | None = None
    story_id: str | None = None

    def matches(self) -> list[tuple[str, str | int]]:
        """The exact-match conditions, as (payload field, value)."""
        pairs: list[tuple[str, str | int | None]] = [
            ("source", self.source),
            ("sentiment_label", self.sentiment_label),
            ("categories", self.category),
            ("topic_id", self.topic_id),
            ("story_id", self.story_id),
        ]
        return [(k, v) for k, v in pairs if v is not None and v != ""]


@dataclass(frozen=True, slots=True)
class RecentPoints:
    """Points of a time range with their vectors (what the story tracker is rebuilt from)."""

    ids: list[str]
    vectors: np.ndarray  # (n, dim) float32
    ts: list[float]
    story_ids: list[str]


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(ABC):
    """What the rest of btcpulse knows of the vector store."""

    @abstractmethod
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points durably (returns after the write is logged); same id, same point."""

    @abstractmethod
    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[VectorHit]:
        """The ``k`` nearest points by cosine similarity, best first."""

    @abstractmethod
    def latest(self, limit: int, flt: SearchFilter | None = None) -> list[dict[str, Any]]:
        """Payloads of the newest points by ``published_ts``, newest first."""

    @abstractmethod
    def retrieve(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Payloads of the points that exist among ``ids``."""

    @abstractmethod
    def count(self, flt: SearchFilter | None = None) -> int: ...

    @abstractmethod
    def recent(self, start_ts: float, limit: int) -> RecentPoints:
        """Up to ``limit`` points published at or after ``start_ts``, newest first, with vectors."""

    @abstractmethod
    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the points that exist among ``ids``."""

    def timeline(self, story_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """Payloads of a story's articles, oldest first."""
        return sorted(self.latest(limit, SearchFilter(story_id=story_id)), key=lambda p: p["published_ts"])

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make every write durable on disk (a no-op where writes already are)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the store."""


def open_vector_store(settings: BtcpulseSettings, dim: int) -> VectorStore:
    """The store the settings name (see the module docstring)."""
    if settings.qdrant_url:
        return ClientVectorStore(settings, dim)
    return EdgeVectorStore(settings.state_dir / "qdrant" / settings.qdrant_collection, dim)


# --------------------------------------------------------------------------------------------
# Embedded: qdrant-edge
# --------------------------------------------------------------------------------------------


class EdgeVectorStore(VectorStore):
    """Qdrant's engine in-process. Not shareable between processes: one owner at a time."""

    def __init__(self, path: Path, dim: int) -> None:
        import qdrant_edge as qe

        self._qe = qe
        self._lock = threading.Lock()  # serialise writes; reads run concurrently in the engine
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine))
        path.mkdir(parents=True, exist_ok=True)
        has_data = any(path.iterdir())
        self._shard = (
            qe.EdgeShard.load(str(path), config) if has_data else qe.EdgeShard.create(str(path), config)
        )
        existing = set(self._shard.info().payload_schema)
        for name in FLOAT_FIELDS:
            if name not in existing:
                self._shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Float))
        for name in KEYWORD_FIELDS:
            if name not in existing:
                self._shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        for name in INTEGER_FIELDS:
            if name not in existing:
                self._shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Integer))

    def _filter(self, flt: SearchFilter | None) -> Any:
        qe = self._qe
        if flt is None:
            return None
        must: list[Any] = []
        if flt.start_ts is not None or flt.end_ts is not None:
            must.append(
                qe.FieldCondition("published_ts", range=qe.RangeFloat(gte=flt.start_ts, lt=flt.end_ts))
            )
        for key, value in flt.matches():
            must.append(qe.FieldCondition(key, match=qe.MatchValue(value)))
        return qe.Filter(must=must) if must else None

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        qe = self._qe
        points = [
            qe.Point(pid, vec.tolist(), payload)
            for pid, vec, payload in zip(ids, vectors, payloads, strict=True)
        ]
        with self._lock:
            self._shard.update(qe.UpdateOperation.upsert_points(points))

    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[VectorHit]:
        qe = self._qe
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()),
            filter=self._filter(flt),
            with_payload=True,
            with_vector=False,
        )
        return [
            VectorHit(str(p.id), float(p.score), dict(p.payload or {})) for p in self._shard.query(request)
        ]

    def latest(self, limit: int, flt: SearchFilter | None = None) -> list[dict[str, Any]]:
        qe = self._qe
        request = qe.ScrollRequest(
            limit=limit,
            filter=self._filter(flt),
            with_payload=True,
            with_vector=False,
            order_by=qe.OrderBy("published_ts", direction=qe.Direction.Desc),
        )
        records, _ = self._shard.scroll(request)
        return [dict(r.payload or {}) for r in records]

    def retrieve(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            dict(r.payload or {})
            for r in self._shard.retrieve(list(ids), with_payload=True, with_vector=False)
        ]

    def count(self, flt: SearchFilter | None = None) -> int:
        return int(self._shard.count(self._qe.CountRequest(exact=True, filter=self._filter(flt))))

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        records = self._shard.retrieve(list(ids), with_payload=False, with_vector=True)
        return {str(r.id): _as_array(r.vector) for r in records}

    def recent(self, start_ts: float, limit: int) -> RecentPoints:
        qe = self._qe
        request = qe.ScrollRequest(
            limit=limit,
            filter=self._filter(SearchFilter(start_ts=start_ts)),
            with_payload=True,
            with_vector=True,
            order_by=qe.OrderBy("published_ts", direction=qe.Direction.Desc),
        )
        records, _ = self._shard.scroll(request)
        return _recent_points([(str(r.id), r.vector, dict(r.payload or {})) for r in records])

    def flush(self) -> None:
        with self._lock:
            self._shard.flush()

    def close(self) -> None:
        with self._lock:
            self._shard.flush()
            self._shard.close()


# --------------------------------------------------------------------------------------------
# Server (or qdrant-client's in-memory mode): qdrant-client
# --------------------------------------------------------------------------------------------


class ClientVectorStore(VectorStore):
    """A Qdrant server (or cluster) by URL through qdrant-client."""

    def __init__(self, settings: BtcpulseSettings, dim: int) -> None:
        from qdrant_client import QdrantClient, models

        self._m = models
        url = settings.qdrant_url or ":memory:"
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        self._client = (
            QdrantClient(location=":memory:") if url == ":memory:" else QdrantClient(url=url, api_key=key)
        )
        self._name = settings.qdrant_collection
        if not self._client.collection_exists(self._name):
            self._client.create_collection(
                self._name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )
        if url != ":memory:":  # the in-process mode has no payload indexes (and warns)
            for name in FLOAT_FIELDS:
                self._client.create_payload_index(self._name, name, models.PayloadSchemaType.FLOAT)
            for name in KEYWORD_FIELDS:
                self._client.create_payload_index(self._name, name, models.PayloadSchemaType.KEYWORD)
            for name in INTEGER_FIELDS:
                self._client.create_payload_index(self._name, name, models.PayloadSchemaType.INTEGER)

    def _filter(self, flt: SearchFilter | None) -> Any:
        m = self._m
        if flt is None:
            return None
        must: list[Any] = []
        if flt.start_ts is not None or flt.end_ts is not None:
            must.append(m.FieldCondition(key="published_ts", range=m.Range(gte=flt.start_ts, lt=flt.end_ts)))
        for key, value in flt.matches():
            must.append(m.FieldCondition(key=key, match=m.MatchValue(value=value)))
        return m.Filter(must=must) if must else None

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        m = self._m
        points = [
            m.PointStruct(id=pid, vector=vec.tolist(), payload=payload)
            for pid, vec, payload in zip(ids, vectors, payloads, strict=True)
        ]
        self._client.upsert(self._name, points=points, wait=True)

    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[VectorHit]:
        result = self._client.query_points(
            self._name,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            limit=k,
            query_filter=self._filter(flt),
            with_payload=True,
        )
        return [VectorHit(str(p.id), float(p.score), dict(p.payload or {})) for p in result.points]

    def latest(self, limit: int, flt: SearchFilter | None = None) -> list[dict[str, Any]]:
        m = self._m
        records, _ = self._client.scroll(
            self._name,
            scroll_filter=self._filter(flt),
            limit=limit,
            with_payload=True,
            order_by=m.OrderBy(key="published_ts", direction=m.Direction.DESC),
        )
        return [dict(r.payload or {}) for r in records]

    def retrieve(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            dict(r.payload or {}) for r in self._client.retrieve(self._name, ids=list(ids), with_payload=True)
        ]

    def count(self, flt: SearchFilter | None = None) -> int:
        return int(self._client.count(self._name, count_filter=self._filter(flt), exact=True).count)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        records = self._client.retrieve(self._name, ids=list(ids), with_payload=False, with_vectors=True)
        return {str(r.id): _as_array(r.vector) for r in records}

    def recent(self, start_ts: float, limit: int) -> RecentPoints:
        m = self._m
        records, _ = self._client.scroll(
            self._name,
            scroll_filter=self._filter(SearchFilter(start_ts=start_ts)),
            limit=limit,
            with_payload=True,
            with_vectors=True,
            order_by=m.OrderBy(key="published_ts", direction=m.Direction.DESC),
        )
        return _recent_points([(str(r.id), r.vector, dict(r.payload or {})) for r in records])

    def close(self) -> None:
        self._client.close()


def _as_array(vector: Any) -> np.ndarray:
    """A point's vector as float32 (a list, or a ``{name: list}`` map, by client)."""
    if isinstance(vector, dict):
        vector = vector.get("", next(iter(vector.values())))
    return np.asarray(vector, dtype=np.float32)


def _recent_points(rows: list[tuple[str, Any, dict[str, Any]]]) -> RecentPoints:
    """Scrolled (id, vector, payload) rows -> :class:`RecentPoints`."""
    return RecentPoints(
        ids=[pid for pid, _, _ in rows],
        vectors=np.stack([_as_array(v) for _, v, _ in rows]) if rows else np.zeros((0, 0), np.float32),
        ts=[float(p.get("published_ts", 0.0)) for _, _, p in rows],
        story_ids=[str(p.get("story_id") or pid) for pid, _, p in rows],
    )

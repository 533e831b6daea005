"""The Qdrant connector: one interface over embedded qdrant-edge and a Qdrant server.

    QDRANT_URL unset     -> :class:`EdgeVectorStore`, Qdrant's engine in this process
                            (qdrant-edge-py), data under <state_dir>/qdrant/<collection>;
                            one process owns it (the vector-store actor).
    QDRANT_URL=http://…  -> :class:`ClientVectorStore` through qdrant-client: a Qdrant server
                            or cluster; the collection is created the first time with the
                            qdrant_shards / _replication_factor / _write_consistency_factor /
                            _hnsw_m / _hnsw_ef_construct / _on_disk settings.
    QDRANT_URL=:memory:  -> qdrant-client's in-process mode, which speaks the same API (tests).
    QDRANT_URL=path:DIR  -> qdrant-client's in-process mode kept in DIR (``file:///DIR`` too; a
                            relative DIR is under the state dir): it survives a restart of the
                            vector-store actor. One process at a time; no payload indexes and
                            a scan per query, so for tests and small data only.

Points are keyed by the article id (a UUID derived from the canonical URL), so an upsert
of a redelivered article overwrites the same point and counts nothing twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from cluster.settings import BtcpulseSettings

log = logging.getLogger(__name__)

# Payload fields with an index: time ranges, ordering by time, and exact-match filters
# (``categories`` is a list: a point matches when any of its categories does).
FLOAT_FIELDS = ("published_ts", "sentiment")
KEYWORD_FIELDS = ("source", "sentiment_label", "categories", "story_id")
INTEGER_FIELDS = ("topic_id",)
#: Qdrant's own default for the HNSW full-scan threshold (KB of vectors), which qdrant-edge's
#: HnswIndexConfig wants spelled out.
HNSW_FULL_SCAN_THRESHOLD = 10_000
#: The embedded store's search-time HNSW ``ef`` (candidates kept while walking the graph);
#: None: the engine's default (ef_construct). Only indexed segments use it.
SEARCH_HNSW_EF: int | None = None


class VectorStoreConfigError(ValueError):
    """The store holds a collection this configuration cannot use (e.g. another vector size)."""


def _mismatch(where: str, size: Any, distance: Any, dim: int) -> VectorStoreConfigError:
    return VectorStoreConfigError(
        f"{where} holds {size}-dimensional {distance} vectors, but the embedding model makes "
        f"{dim}-dimensional Cosine ones: set BTCPULSE_QDRANT_COLLECTION to a new collection (or "
        "delete this one) and replay the news to re-index it, or configure the model it was built with"
    )


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

    def search_many(
        self, vectors: np.ndarray, ks: Sequence[int], flts: Sequence[SearchFilter | None]
    ) -> list[list[VectorHit]]:
        """Several searches at once: row ``i`` of ``vectors`` with ``ks[i]`` and ``flts[i]``;
        each gives what :meth:`search` gives it alone."""
        _check_batch(vectors, ks, flts)
        return self._search_each(vectors, ks, flts)

    def _search_each(
        self, vectors: np.ndarray, ks: Sequence[int], flts: Sequence[SearchFilter | None]
    ) -> list[list[VectorHit]]:
        """The searches one :meth:`search` call each (lengths already checked)."""
        return [self.search(v, k, f) for v, k, f in zip(vectors, ks, flts, strict=True)]

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
    return EdgeVectorStore(
        settings.state_dir / "qdrant" / settings.qdrant_collection,
        dim,
        hnsw_m=settings.qdrant_hnsw_m,
        hnsw_ef_construct=settings.qdrant_hnsw_ef_construct,
    )


# --------------------------------------------------------------------------------------------
# Embedded: qdrant-edge
# --------------------------------------------------------------------------------------------


def _check_batch(vectors: np.ndarray, ks: Sequence[int], flts: Sequence[SearchFilter | None]) -> int:
    if not len(vectors) == len(ks) == len(flts):
        raise ValueError(f"{len(vectors)} vectors, {len(ks)} ks and {len(flts)} filters")
    return len(vectors)


def _hits(points: Iterable[Any]) -> list[VectorHit]:
    """Scored points (qdrant-edge's or qdrant-client's) as hits."""
    return [VectorHit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]


class EdgeVectorStore(VectorStore):
    """Qdrant's engine in-process. Not shareable between processes: one owner at a time."""

    def __init__(
        self, path: Path, dim: int, *, hnsw_m: int | None = None, hnsw_ef_construct: int | None = None
    ) -> None:
        """``hnsw_m`` / ``hnsw_ef_construct``: the HNSW graph's parameters (None: the engine's
        defaults, or what the shard was last opened with); they apply to graphs built from then on."""
        import qdrant_edge as qe

        self._qe = qe
        self._lock = threading.Lock()  # serialise writes; reads run concurrently in the engine
        hnsw = None
        if hnsw_m is not None or hnsw_ef_construct is not None:
            hnsw = qe.HnswIndexConfig(
                m=16 if hnsw_m is None else hnsw_m,
                ef_construct=100 if hnsw_ef_construct is None else hnsw_ef_construct,
                full_scan_threshold=HNSW_FULL_SCAN_THRESHOLD,
            )
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine), hnsw_config=hnsw
        )
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            try:
                self._shard = qe.EdgeShard.load(str(path), config)
            except Exception as exc:  # the engine raises a bare Exception
                if "incompatible" not in str(exc).lower():
                    raise
                raise VectorStoreConfigError(
                    f"the embedded shard at {path} does not fit {dim}-dimensional Cosine vectors ({exc}): "
                    "set BTCPULSE_QDRANT_COLLECTION to a new collection (or delete this directory) and "
                    "replay the news to re-index it, or configure the model it was built with"
                ) from exc
        else:
            self._shard = qe.EdgeShard.create(str(path), config)
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

    def _query(self, vector: np.ndarray, k: int, flt: SearchFilter | None) -> Any:
        qe = self._qe
        return qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()),
            filter=self._filter(flt),
            with_payload=True,
            with_vector=False,
            params=None if SEARCH_HNSW_EF is None else qe.SearchParams(hnsw_ef=SEARCH_HNSW_EF),
        )

    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[VectorHit]:
        return _hits(self._shard.query(self._query(vector, k, flt)))

    def search_many(
        self, vectors: np.ndarray, ks: Sequence[int], flts: Sequence[SearchFilter | None]
    ) -> list[list[VectorHit]]:
        """One call into the engine (``query_batch``, planned as one batch). At 100k points it
        costs the same CPU per search as one call each (``bench/NOTES.md``)."""
        if _check_batch(vectors, ks, flts) <= 1:
            return self._search_each(vectors, ks, flts)
        queries = [self._query(v, k, f) for v, k, f in zip(vectors, ks, flts, strict=True)]
        batch = self._qe.QueryBatchRequest(queries)
        return [_hits(points) for points in self._shard.query_batch(batch)]

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
    """A Qdrant server (or cluster) by URL through qdrant-client, or its in-process mode."""

    def __init__(self, settings: BtcpulseSettings, dim: int) -> None:
        from qdrant_client import models

        self._m = models
        self._name = settings.qdrant_collection
        self._client, self._local = _qdrant_client(settings)
        self._where = f"Qdrant collection {self._name!r} at {_redacted(settings.qdrant_url or ':memory:')}"
        # In-process mode is one Python structure (and, with a path, one SQLite file) that the
        # actor's threads would share: one call at a time. A server takes concurrent calls.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self._local else contextlib.nullcontext()
        )
        try:
            if not self._client.collection_exists(self._name):
                self._create_collection(settings, dim)
            self._check_vectors(dim)
            self._ensure_payload_indexes(settings)
        except BaseException:
            self._client.close()
            raise

    def _create_collection(self, settings: BtcpulseSettings, dim: int) -> None:
        m = self._m
        if settings.qdrant_write_consistency_factor > settings.qdrant_replication_factor:
            raise VectorStoreConfigError(
                f"qdrant_write_consistency_factor ({settings.qdrant_write_consistency_factor}) cannot "
                f"exceed qdrant_replication_factor ({settings.qdrant_replication_factor})"
            )
        try:
            self._client.create_collection(
                self._name,
                vectors_config=m.VectorParams(
                    size=dim, distance=m.Distance.COSINE, on_disk=settings.qdrant_on_disk
                ),
                shard_number=settings.qdrant_shards,
                replication_factor=settings.qdrant_replication_factor,
                write_consistency_factor=settings.qdrant_write_consistency_factor,
                hnsw_config=m.HnswConfigDiff(
                    m=settings.qdrant_hnsw_m, ef_construct=settings.qdrant_hnsw_ef_construct
                ),
            )
        except Exception:
            # Another process (a second vector-store actor starting) may have created it first.
            if not self._client.collection_exists(self._name):
                raise
        log.info(
            "created %s: %d shard(s), replication %d, write consistency %d, hnsw m=%d ef_construct=%d%s",
            self._where,
            settings.qdrant_shards,
            settings.qdrant_replication_factor,
            settings.qdrant_write_consistency_factor,
            settings.qdrant_hnsw_m,
            settings.qdrant_hnsw_ef_construct,
            ", vectors on disk" if settings.qdrant_on_disk else "",
        )

    def _check_vectors(self, dim: int) -> None:
        """An existing collection must hold one unnamed Cosine vector of the model's size."""
        m = self._m
        vectors = self._client.get_collection(self._name).config.params.vectors
        if not isinstance(vectors, m.VectorParams):
            names = sorted(vectors or {})
            raise VectorStoreConfigError(
                f"{self._where} holds named vectors {names}, not the one unnamed vector btcpulse writes: "
                "set BTCPULSE_QDRANT_COLLECTION to a collection of its own"
            )
        distance = getattr(vectors.distance, "value", vectors.distance)
        if vectors.size != dim or vectors.distance != m.Distance.COSINE:
            raise _mismatch(self._where, vectors.size, distance, dim)

    def _index_schemas(self, settings: BtcpulseSettings) -> dict[str, Any]:
        """Each indexed payload field and how it is indexed.

        ``published_ts`` is principal: nearly every read is a time range or ordered by time, so
        the server lays points out by it. No field is a tenant (``is_tenant``): queries run across
        sources, sentiments and categories, never within just one. Indexes stay in RAM (filters
        use them on every query) except ``story_id``'s with ``qdrant_on_disk``: one value per
        story, read only for a story's timeline.
        """
        m = self._m
        schemas: dict[str, Any] = {
            "published_ts": m.FloatIndexParams(type=m.FloatIndexType.FLOAT, is_principal=True),
            "sentiment": m.PayloadSchemaType.FLOAT,
            "source": m.PayloadSchemaType.KEYWORD,
            "sentiment_label": m.PayloadSchemaType.KEYWORD,
            "categories": m.PayloadSchemaType.KEYWORD,
            "story_id": (
                m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, on_disk=True)
                if settings.qdrant_on_disk
                else m.PayloadSchemaType.KEYWORD
            ),
            # exact matches only: no range index
            "topic_id": m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, lookup=True, range=False),
        }
        assert set(schemas) == {*FLOAT_FIELDS, *KEYWORD_FIELDS, *INTEGER_FIELDS}
        return schemas

    def _ensure_payload_indexes(self, settings: BtcpulseSettings) -> None:
        """Create the indexes the collection lacks (or holds with another type); no call for
        one that exists, so opening the store again changes nothing."""
        existing = self._client.get_collection(self._name).payload_schema or {}
        with warnings.catch_warnings():
            # in-process mode keeps no payload indexes and says so once; the calls still run
            warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
            for field, schema in self._index_schemas(settings).items():
                data_type = getattr(schema, "type", schema)
                have = existing.get(field)
                if have is not None and _type_name(have.data_type) == _type_name(data_type):
                    continue
                self._client.create_payload_index(self._name, field, field_schema=schema, wait=True)

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
        with self._lock:
            self._client.upsert(self._name, points=points, wait=True)

    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[VectorHit]:
        with self._lock:
            result = self._client.query_points(
                self._name,
                query=np.asarray(vector, dtype=np.float32).tolist(),
                limit=k,
                query_filter=self._filter(flt),
                with_payload=True,
            )
        return _hits(result.points)

    def search_many(
        self, vectors: np.ndarray, ks: Sequence[int], flts: Sequence[SearchFilter | None]
    ) -> list[list[VectorHit]]:
        """One request for all of them (``query_batch_points``: one round trip to the server)."""
        if _check_batch(vectors, ks, flts) <= 1:
            return self._search_each(vectors, ks, flts)
        m = self._m
        requests = [
            m.QueryRequest(
                query=np.asarray(v, dtype=np.float32).tolist(),
                limit=k,
                filter=self._filter(f),
                with_payload=True,
            )
            for v, k, f in zip(vectors, ks, flts, strict=True)
        ]
        with self._lock:
            results = self._client.query_batch_points(self._name, requests=requests)
        return [_hits(r.points) for r in results]

    def latest(self, limit: int, flt: SearchFilter | None = None) -> list[dict[str, Any]]:
        m = self._m
        with self._lock:
            records, _ = self._client.scroll(
                self._name,
                scroll_filter=self._filter(flt),
                limit=limit,
                with_payload=True,
                order_by=m.OrderBy(key="published_ts", direction=m.Direction.DESC),
            )
        return [dict(r.payload or {}) for r in records]

    def retrieve(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        with self._lock:
            records = self._client.retrieve(self._name, ids=list(ids), with_payload=True)
        return [dict(r.payload or {}) for r in records]

    def count(self, flt: SearchFilter | None = None) -> int:
        with self._lock:
            return int(self._client.count(self._name, count_filter=self._filter(flt), exact=True).count)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            records = self._client.retrieve(self._name, ids=list(ids), with_payload=False, with_vectors=True)
        return {str(r.id): _as_array(r.vector) for r in records}

    def recent(self, start_ts: float, limit: int) -> RecentPoints:
        m = self._m
        with self._lock:
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
        with self._lock:
            self._client.close()


def local_path(url: str, state_dir: Path) -> Path | None:
    """The directory of a ``path:DIR`` or ``file:///DIR`` URL (a relative DIR is under the state
    dir), or None for any other URL."""
    if url.startswith("path:"):
        raw = url.removeprefix("path:")
    elif url.startswith("file:"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise VectorStoreConfigError(f"QDRANT_URL {url!r}: a file: URL names a local directory")
        raw = unquote(parsed.path)
    else:
        return None
    if not raw:
        raise VectorStoreConfigError(f"QDRANT_URL {url!r} names no directory")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else state_dir / path


def _qdrant_client(settings: BtcpulseSettings) -> tuple[Any, bool]:
    """(the client the URL names, whether it is qdrant-client's in-process mode)."""
    from qdrant_client import QdrantClient

    url = settings.qdrant_url or ":memory:"
    if url == ":memory:":
        return QdrantClient(location=":memory:"), True
    path = local_path(url, settings.state_dir)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=str(path)), True
    key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return QdrantClient(url=url, api_key=key), False


def _redacted(url: str) -> str:
    """A URL fit for a message: no user or password."""
    parsed = urlparse(url)
    if "@" not in parsed.netloc:
        return url
    return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]).geturl()


def _type_name(t: Any) -> str:
    """A payload schema type as its plain name ("float"), enum or string."""
    return str(getattr(t, "value", t)).lower()


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

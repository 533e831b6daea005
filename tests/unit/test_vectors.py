"""cluster.vectors: one contract, run against both real backends: embedded qdrant-edge
(EdgeVectorStore on a temporary directory) and qdrant-client's in-process mode
(ClientVectorStore with QDRANT_URL=":memory:", and kept in a directory with "path:DIR")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster.settings import BtcpulseSettings
from cluster.vectors import (
    ClientVectorStore,
    EdgeVectorStore,
    SearchFilter,
    VectorHit,
    VectorStore,
    open_vector_store,
)

DIM = 4
T0 = 1_656_000_000.0


def _id(n: int) -> str:
    return str(uuid.UUID(int=n))


# Four orthogonal points, one per axis, at T0, T0+100, T0+200, T0+300.
IDS = [_id(n) for n in (1, 2, 3, 4)]
VECTORS = np.eye(DIM, dtype=np.float32)
PAYLOADS: list[dict[str, Any]] = [
    {"id": IDS[0], "title": "a", "published_ts": T0, "source": "coindesk", "sentiment_label": "positive"},
    {"id": IDS[1], "title": "b", "published_ts": T0 + 100, "source": "reddit", "sentiment_label": "neutral"},
    {
        "id": IDS[2],
        "title": "c",
        "published_ts": T0 + 200,
        "source": "coindesk",
        "sentiment_label": "negative",
    },
    {"id": IDS[3], "title": "d", "published_ts": T0 + 300, "source": "reddit", "sentiment_label": "positive"},
]


KINDS = ["edge", "client", "client-path"]


def _settings(**kw: Any) -> BtcpulseSettings:
    return BtcpulseSettings(**kw)


def _open(kind: str, path: Path) -> VectorStore:
    if kind == "edge":
        return EdgeVectorStore(path / "qdrant" / "news", DIM)
    url = f"path:{path / 'qdrant-local'}" if kind == "client-path" else ":memory:"
    return ClientVectorStore(_settings(qdrant_url=url, qdrant_collection="news"), DIM)


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """An empty store of each kind, for tests that write."""
    s = _open(request.param, tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="module", params=KINDS)
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    """The four points in a store of each kind, shared by the read-only tests of this module
    (opening an embedded shard takes a good part of a second)."""
    s = _open(request.param, tmp_path_factory.mktemp(f"filled-{request.param}"))
    s.upsert(IDS, VECTORS, PAYLOADS)
    yield s
    s.close()


def _titles(rows: list[dict[str, Any]]) -> list[str]:
    return [r["title"] for r in rows]


# ---------------------------------------------------------------- writes


def test_empty_store(store: VectorStore) -> None:
    assert store.count() == 0
    assert store.latest(10) == []
    assert store.search(np.ones(DIM, dtype=np.float32), 5) == []
    assert store.retrieve([IDS[0]]) == []


def test_upsert_is_idempotent(store: VectorStore) -> None:
    store.upsert(IDS, VECTORS, PAYLOADS)
    assert store.count() == 4
    store.upsert(IDS, VECTORS, PAYLOADS)
    store.upsert(IDS[:2], VECTORS[:2], PAYLOADS[:2])
    assert store.count() == 4


def test_upsert_same_id_overwrites_point(store: VectorStore) -> None:
    filled = store
    filled.upsert(IDS, VECTORS, PAYLOADS)
    new_payload = {**PAYLOADS[0], "title": "a2", "sentiment_label": "negative"}
    filled.upsert([IDS[0]], np.array([[0, 0, 0, 1]], dtype=np.float32), [new_payload])
    assert filled.count() == 4
    assert _titles(filled.retrieve([IDS[0]])) == ["a2"]
    # the vector was replaced too: the point now sits on the 4th axis
    hits = filled.search(np.array([0, 0, 0, 1], dtype=np.float32), 2)
    assert {h.id for h in hits} == {IDS[0], IDS[3]}
    assert all(h.score == pytest.approx(1.0, abs=1e-5) for h in hits)


def test_upsert_length_mismatch_raises(store: VectorStore) -> None:
    with pytest.raises(ValueError):
        store.upsert(IDS, VECTORS[:3], PAYLOADS)


# ---------------------------------------------------------------- search


def test_search_orders_by_cosine(filled: VectorStore) -> None:
    query = np.array([1.0, 0.5, 0.1, 0.0], dtype=np.float32)
    hits = filled.search(query, 4)
    assert all(isinstance(h, VectorHit) for h in hits)
    assert [h.id for h in hits] == IDS
    norm = float(np.linalg.norm(query))
    expected = [1.0 / norm, 0.5 / norm, 0.1 / norm, 0.0]
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-4)
    assert hits[0].payload["title"] == "a"
    assert hits[0].payload["source"] == "coindesk"


def test_search_cosine_ignores_query_scale(filled: VectorStore) -> None:
    a = filled.search(np.array([0, 3, 0, 0], dtype=np.float32), 1)
    b = filled.search(np.array([0, 0.01, 0, 0], dtype=np.float32), 1)
    assert a[0].id == b[0].id == IDS[1]
    assert a[0].score == pytest.approx(1.0, abs=1e-5)
    assert b[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_respects_k(filled: VectorStore) -> None:
    hits = filled.search(np.array([0.1, 0.2, 0.9, 0.3], dtype=np.float32), 2)
    assert [h.id for h in hits] == [IDS[2], IDS[3]]


def test_search_time_range_is_half_open(filled: VectorStore) -> None:
    query = np.ones(DIM, dtype=np.float32)
    hits = filled.search(query, 10, SearchFilter(start_ts=T0 + 100, end_ts=T0 + 300))
    assert sorted(h.payload["title"] for h in hits) == ["b", "c"]


def test_search_with_source_and_label(filled: VectorStore) -> None:
    query = np.array([1, 1, 1, 1], dtype=np.float32)

    def titles(flt: SearchFilter) -> list[str]:
        return sorted(h.payload["title"] for h in filled.search(query, 10, flt))

    assert titles(SearchFilter(source="reddit")) == ["b", "d"]
    assert titles(SearchFilter(sentiment_label="positive")) == ["a", "d"]
    assert titles(SearchFilter(source="reddit", sentiment_label="positive")) == ["d"]
    assert titles(SearchFilter(source="coindesk", start_ts=T0 + 1)) == ["c"]
    assert titles(SearchFilter(source="nobody")) == []


def test_search_many_gives_each_search_what_it_gets_alone(filled: VectorStore) -> None:
    """One batch (qdrant-edge's query_batch, qdrant-client's query_batch_points) of searches
    with their own k and filter."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(6, DIM)).astype(np.float32)
    ks = [1, 4, 2, 10, 3, 4]
    flts: list[SearchFilter | None] = [
        None,
        SearchFilter(source="reddit"),
        SearchFilter(start_ts=T0 + 100, end_ts=T0 + 300),
        SearchFilter(sentiment_label="positive"),
        SearchFilter(source="nobody"),
        SearchFilter(),
    ]
    batch = filled.search_many(vectors, ks, flts)
    alone = [filled.search(v, k, f) for v, k, f in zip(vectors, ks, flts, strict=True)]
    assert [[h.id for h in hits] for hits in batch] == [[h.id for h in hits] for hits in alone]
    for got, want in zip(batch, alone, strict=True):
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
        assert [h.payload for h in got] == [h.payload for h in want]
    assert [len(hits) for hits in batch] == [1, 2, 2, 2, 0, 4]
    assert filled.search_many(vectors[:1], [2], [None]) == [filled.search(vectors[0], 2)]
    assert filled.search_many(vectors[:0], [], []) == []


def test_search_many_refuses_lists_of_other_lengths(filled: VectorStore) -> None:
    with pytest.raises(ValueError, match="2 vectors, 1 ks and 2 filters"):
        filled.search_many(np.eye(DIM, dtype=np.float32)[:2], [1], [None, None])


# ---------------------------------------------------------------- count / latest / retrieve


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (None, 4),
        (SearchFilter(), 4),
        (SearchFilter(start_ts=T0 + 100), 3),
        (SearchFilter(end_ts=T0 + 100), 1),
        (SearchFilter(start_ts=T0 + 100, end_ts=T0 + 300), 2),
        (SearchFilter(start_ts=T0 + 300, end_ts=T0 + 300), 0),
        (SearchFilter(source="coindesk"), 2),
        (SearchFilter(sentiment_label="neutral"), 1),
        (SearchFilter(start_ts=T0, end_ts=T0 + 250, source="coindesk", sentiment_label="negative"), 1),
        (SearchFilter(sentiment_label="bullish"), 0),
    ],
)
def test_count_with_filter(filled: VectorStore, flt: SearchFilter | None, expected: int) -> None:
    assert filled.count(flt) == expected


def test_latest_newest_first(filled: VectorStore) -> None:
    assert _titles(filled.latest(10)) == ["d", "c", "b", "a"]
    assert _titles(filled.latest(2)) == ["d", "c"]


def test_latest_with_filter(filled: VectorStore) -> None:
    assert _titles(filled.latest(10, SearchFilter(source="coindesk"))) == ["c", "a"]
    assert _titles(filled.latest(10, SearchFilter(end_ts=T0 + 300))) == ["c", "b", "a"]
    assert _titles(filled.latest(1, SearchFilter(sentiment_label="positive"))) == ["d"]


def test_latest_order_does_not_follow_insertion(store: VectorStore) -> None:
    order = [2, 0, 3, 1]
    store.upsert([IDS[i] for i in order], VECTORS[order], [PAYLOADS[i] for i in order])
    assert _titles(store.latest(10)) == ["d", "c", "b", "a"]


def test_retrieve_existing_only(filled: VectorStore) -> None:
    rows = filled.retrieve([IDS[2], _id(999), IDS[0]])
    assert sorted(_titles(rows)) == ["a", "c"]
    by_title = {r["title"]: r for r in rows}
    assert by_title["c"] == PAYLOADS[2]
    assert filled.retrieve([]) == []


# ---------------------------------------------------------------- durability and factory


def test_edge_store_keeps_points_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "qdrant" / "news"
    first = EdgeVectorStore(path, DIM)
    first.upsert(IDS, VECTORS, PAYLOADS)
    first.close()

    again = EdgeVectorStore(path, DIM)
    try:
        assert again.count() == 4
        assert again.count(SearchFilter(source="reddit")) == 2
        assert _titles(again.latest(10)) == ["d", "c", "b", "a"]
        assert [h.id for h in again.search(np.array([0, 0, 1, 0], dtype=np.float32), 1)] == [IDS[2]]
        again.upsert(IDS, VECTORS, PAYLOADS)
        assert again.count() == 4
    finally:
        again.close()


def test_edge_store_flush_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "edge"
    first = EdgeVectorStore(path, DIM)
    first.upsert(IDS[:1], VECTORS[:1], PAYLOADS[:1])
    first.flush()
    first.close()
    again = EdgeVectorStore(path, DIM)
    try:
        assert _titles(again.retrieve(IDS)) == ["a"]
    finally:
        again.close()


def test_open_vector_store_picks_backend(tmp_path: Path) -> None:
    edge = open_vector_store(_settings(state_dir=tmp_path, qdrant_url=None, qdrant_collection="c1"), DIM)
    try:
        assert isinstance(edge, EdgeVectorStore)
        assert (tmp_path / "qdrant" / "c1").is_dir()
    finally:
        edge.close()
    client = open_vector_store(_settings(state_dir=tmp_path, qdrant_url=":memory:"), DIM)
    try:
        assert isinstance(client, ClientVectorStore)
    finally:
        client.close()


def _analysed(store: VectorStore) -> None:
    extra = [
        {"categories": ["regulation", "etf_institutional"], "topic_id": 1, "story_id": IDS[0]},
        {"categories": ["mining_energy"], "topic_id": 2, "story_id": IDS[1]},
        {"categories": ["etf_institutional"], "topic_id": 1, "story_id": IDS[0]},
        {"categories": [], "topic_id": -1, "story_id": IDS[3]},
    ]
    store.upsert(IDS, VECTORS, [{**p, **e} for p, e in zip(PAYLOADS, extra, strict=True)])


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (SearchFilter(category="etf_institutional"), {IDS[0], IDS[2]}),
        (SearchFilter(category="regulation"), {IDS[0]}),
        (SearchFilter(topic_id=2), {IDS[1]}),
        (SearchFilter(story_id=IDS[0]), {IDS[0], IDS[2]}),
        (SearchFilter(category="etf_institutional", source="reddit"), set()),
        (SearchFilter(topic_id=0), set()),
    ],
)
def test_filters_on_analyses(store: VectorStore, flt: SearchFilter, expected: set[str]) -> None:
    _analysed(store)
    assert {h.id for h in store.search(np.ones(DIM, dtype=np.float32), 10, flt)} == expected
    assert store.count(flt) == len(expected)


def test_recent_returns_vectors_newest_first(store: VectorStore) -> None:
    _analysed(store)
    recent = store.recent(T0 + 100, limit=10)
    assert recent.ids == [IDS[3], IDS[2], IDS[1]]
    assert recent.ts == [T0 + 300, T0 + 200, T0 + 100]
    np.testing.assert_allclose(recent.vectors, VECTORS[[3, 2, 1]], atol=1e-6)
    assert recent.story_ids == [IDS[3], IDS[0], IDS[1]]
    empty = store.recent(T0 + 1000, limit=10)
    assert (empty.ids, empty.vectors.shape) == ([], (0, 0))


def test_timeline_of_a_story_oldest_first(store: VectorStore) -> None:
    _analysed(store)
    assert [p["id"] for p in store.timeline(IDS[0])] == [IDS[0], IDS[2]]


def test_vectors_by_id(filled: VectorStore) -> None:
    got = filled.vectors([IDS[1], _id(99)])
    assert list(got) == [IDS[1]]
    np.testing.assert_allclose(got[IDS[1]], VECTORS[1], atol=1e-6)

"""cluster.vectors, the qdrant-client path: how the collection is created (shards, replication,
write consistency, HNSW, on-disk vectors), the payload indexes it asks for, that opening it
again asks for nothing twice, and the clear errors for a collection it cannot use.

qdrant-client's in-process mode ignores sharding and keeps no payload indexes, so the calls
are recorded on their way to a real in-process client (which really creates the collection);
a variant also answers ``payload_schema`` from the indexes it was asked for, as a server does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import qdrant_client
from qdrant_client import QdrantClient, models

from cluster.settings import BtcpulseSettings
from cluster.vectors import (
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    ClientVectorStore,
    EdgeVectorStore,
    SearchFilter,
    VectorStoreConfigError,
    _redacted,
    local_path,
    open_vector_store,
)

DIM = 4
ALL_FIELDS = {*FLOAT_FIELDS, *KEYWORD_FIELDS, *INTEGER_FIELDS}


class RecordingClient(QdrantClient):
    """A real qdrant-client that notes the collection and index calls it gets."""

    created: ClassVar[list[dict[str, Any]]] = []
    indexed: ClassVar[list[tuple[str, Any]]] = []

    def create_collection(self, collection_name: str, **kwargs: Any) -> bool:  # type: ignore[override]
        type(self).created.append({"collection_name": collection_name, **kwargs})
        return super().create_collection(collection_name, **kwargs)

    def create_payload_index(self, collection_name: str, field_name: str, **kwargs: Any) -> Any:  # type: ignore[override]
        type(self).indexed.append((field_name, kwargs.get("field_schema")))
        return super().create_payload_index(collection_name, field_name, **kwargs)


class ServerLikeClient(RecordingClient):
    """Also lists the payload indexes it was asked for in ``payload_schema``, as a server
    does (in-process mode always answers ``{}``)."""

    schema: ClassVar[dict[str, models.PayloadIndexInfo]] = {}

    def create_payload_index(self, collection_name: str, field_name: str, **kwargs: Any) -> Any:  # type: ignore[override]
        result = super().create_payload_index(collection_name, field_name, **kwargs)
        schema = kwargs["field_schema"]
        data_type = models.PayloadSchemaType(str(getattr(schema, "type", schema).value))
        type(self).schema[field_name] = models.PayloadIndexInfo(data_type=data_type, points=0)
        return result

    def get_collection(self, collection_name: str, **kwargs: Any) -> models.CollectionInfo:
        info = super().get_collection(collection_name, **kwargs)
        return info.model_copy(update={"payload_schema": dict(type(self).schema)})


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[RecordingClient]]:
    """ClientVectorStore builds its clients from this class for the test."""
    monkeypatch.setattr(RecordingClient, "created", [])
    monkeypatch.setattr(RecordingClient, "indexed", [])
    monkeypatch.setattr(qdrant_client, "QdrantClient", RecordingClient)
    yield RecordingClient


@pytest.fixture
def server_like(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ServerLikeClient]]:
    monkeypatch.setattr(ServerLikeClient, "created", [])
    monkeypatch.setattr(ServerLikeClient, "indexed", [])
    monkeypatch.setattr(ServerLikeClient, "schema", {})
    monkeypatch.setattr(qdrant_client, "QdrantClient", ServerLikeClient)
    yield ServerLikeClient


def _settings(tmp_path: Path, **kw: Any) -> BtcpulseSettings:
    kw.setdefault("qdrant_url", f"path:{tmp_path / 'qdrant-local'}")
    return BtcpulseSettings(state_dir=tmp_path, qdrant_collection="news", **kw)


def _point(n: int, ts: float = 1_656_000_000.0) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    pid = str(uuid.UUID(int=n))
    vector = np.zeros((1, DIM), dtype=np.float32)
    vector[0, n % DIM] = 1.0
    return [pid], vector, [{"id": pid, "published_ts": ts + n, "source": "coindesk"}]


def _schema_kind(schema: Any) -> str:
    return str(getattr(schema, "type", schema).value)


# ---------------------------------------------------------------- creating the collection


def test_collection_created_with_the_configured_cluster_settings(
    tmp_path: Path, recording: type[RecordingClient]
) -> None:
    settings = _settings(
        tmp_path,
        qdrant_shards=6,
        qdrant_replication_factor=3,
        qdrant_write_consistency_factor=2,
        qdrant_hnsw_m=32,
        qdrant_hnsw_ef_construct=256,
        qdrant_on_disk=True,
    )
    store = ClientVectorStore(settings, DIM)
    try:
        [call] = recording.created
        assert call["collection_name"] == "news"
        sharding = (call["shard_number"], call["replication_factor"], call["write_consistency_factor"])
        assert sharding == (6, 3, 2)
        hnsw = call["hnsw_config"]
        assert (hnsw.m, hnsw.ef_construct) == (32, 256)
        vectors = call["vectors_config"]
        assert (vectors.size, vectors.distance, vectors.on_disk) == (DIM, models.Distance.COSINE, True)
        # it really exists, and takes points
        store.upsert(*_point(1))
        assert store.count() == 1
        created = store._client.get_collection("news").config.params.vectors
        assert isinstance(created, models.VectorParams) and (created.size, created.on_disk) == (DIM, True)
    finally:
        store.close()


def test_defaults_create_one_shard_one_replica_in_ram(
    tmp_path: Path, recording: type[RecordingClient]
) -> None:
    ClientVectorStore(_settings(tmp_path, qdrant_url=":memory:"), DIM).close()
    [call] = recording.created
    assert (call["shard_number"], call["replication_factor"], call["write_consistency_factor"]) == (1, 1, 1)
    assert (call["hnsw_config"].m, call["hnsw_config"].ef_construct) == (16, 100)
    assert call["vectors_config"].on_disk is False


def test_write_consistency_above_replication_is_refused(
    tmp_path: Path, recording: type[RecordingClient]
) -> None:
    settings = _settings(tmp_path, qdrant_replication_factor=2, qdrant_write_consistency_factor=3)
    with pytest.raises(VectorStoreConfigError, match="write_consistency_factor"):
        ClientVectorStore(settings, DIM)
    assert recording.created == []


def test_a_collection_created_meanwhile_by_another_process_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class LosesTheRace(QdrantClient):
        def create_collection(self, collection_name: str, **kwargs: Any) -> bool:  # type: ignore[override]
            super().create_collection(collection_name, **kwargs)
            raise RuntimeError("Collection `news` already exists!")

    monkeypatch.setattr(qdrant_client, "QdrantClient", LosesTheRace)
    store = ClientVectorStore(_settings(tmp_path, qdrant_url=":memory:"), DIM)
    try:
        assert store.count() == 0
    finally:
        store.close()


# ---------------------------------------------------------------- payload indexes


def test_every_filtered_field_gets_its_index(tmp_path: Path, recording: type[RecordingClient]) -> None:
    ClientVectorStore(_settings(tmp_path), DIM).close()
    schemas = dict(recording.indexed)
    assert len(recording.indexed) == len(schemas), "each field once"
    assert set(schemas) == ALL_FIELDS
    assert {f: _schema_kind(s) for f, s in schemas.items()} == {
        "published_ts": "float",
        "sentiment": "float",
        "source": "keyword",
        "sentiment_label": "keyword",
        "categories": "keyword",
        "story_id": "keyword",
        "topic_id": "integer",
    }
    # time ranges and ordering by time: the principal field
    assert schemas["published_ts"].is_principal is True
    # topic ids are matched exactly, never ranged
    assert (schemas["topic_id"].lookup, schemas["topic_id"].range) == (True, False)
    # no tenant field: queries run across sources, labels and categories
    assert not any(getattr(s, "is_tenant", None) for s in schemas.values())
    # in RAM unless asked otherwise
    assert not any(getattr(s, "on_disk", None) for s in schemas.values())


def test_on_disk_puts_only_the_story_index_on_disk(tmp_path: Path, recording: type[RecordingClient]) -> None:
    ClientVectorStore(_settings(tmp_path, qdrant_on_disk=True), DIM).close()
    on_disk = {f for f, s in recording.indexed if getattr(s, "on_disk", None)}
    assert on_disk == {"story_id"}


def test_reopening_creates_nothing_again(tmp_path: Path, server_like: type[ServerLikeClient]) -> None:
    settings = _settings(tmp_path)
    first = ClientVectorStore(settings, DIM)
    first.upsert(*_point(1))
    first.close()
    assert len(server_like.created) == 1 and len(server_like.indexed) == len(ALL_FIELDS)

    again = ClientVectorStore(settings, DIM)
    try:
        assert len(server_like.created) == 1, "the collection exists: not created again"
        assert len(server_like.indexed) == len(ALL_FIELDS), "every index exists: none requested again"
        assert again.count() == 1
    finally:
        again.close()


def test_an_index_of_another_type_is_replaced(tmp_path: Path, server_like: type[ServerLikeClient]) -> None:
    settings = _settings(tmp_path)
    ClientVectorStore(settings, DIM).close()
    server_like.schema["topic_id"] = models.PayloadIndexInfo(
        data_type=models.PayloadSchemaType.KEYWORD, points=0
    )
    server_like.indexed.clear()
    ClientVectorStore(settings, DIM).close()
    assert [(f, _schema_kind(s)) for f, s in server_like.indexed] == [("topic_id", "integer")]


# ---------------------------------------------------------------- collections it cannot use


def _make_collection(tmp_path: Path, vectors_config: Any) -> BtcpulseSettings:
    settings = _settings(tmp_path)
    path = local_path(str(settings.qdrant_url), tmp_path)
    assert path is not None
    client = QdrantClient(path=str(path))
    client.create_collection("news", vectors_config=vectors_config)
    client.close()
    return settings


def test_existing_collection_of_another_size_is_a_clear_error(tmp_path: Path) -> None:
    settings = _make_collection(tmp_path, models.VectorParams(size=8, distance=models.Distance.COSINE))
    with pytest.raises(VectorStoreConfigError) as err:
        ClientVectorStore(settings, DIM)
    message = str(err.value)
    assert "'news'" in message and "8-dimensional" in message and f"{DIM}-dimensional" in message
    assert "BTCPULSE_QDRANT_COLLECTION" in message
    # the client was closed: the directory can be opened again at once
    QdrantClient(path=str(local_path(str(settings.qdrant_url), tmp_path))).close()


def test_existing_collection_of_another_distance_is_a_clear_error(tmp_path: Path) -> None:
    settings = _make_collection(tmp_path, models.VectorParams(size=DIM, distance=models.Distance.DOT))
    with pytest.raises(VectorStoreConfigError, match="Dot vectors"):
        ClientVectorStore(settings, DIM)


def test_existing_collection_of_named_vectors_is_a_clear_error(tmp_path: Path) -> None:
    named = {"text": models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
    settings = _make_collection(tmp_path, named)
    with pytest.raises(VectorStoreConfigError, match=r"named vectors \['text'\]"):
        ClientVectorStore(settings, DIM)


def test_edge_shard_of_another_size_is_a_clear_error(tmp_path: Path) -> None:
    EdgeVectorStore(tmp_path / "shard", 8).close()
    with pytest.raises(VectorStoreConfigError, match="BTCPULSE_QDRANT_COLLECTION"):
        EdgeVectorStore(tmp_path / "shard", DIM)


# ---------------------------------------------------------------- local paths


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("path:/data/qdrant", Path("/data/qdrant")),
        ("path:qdrant-local", Path("/state/qdrant-local")),
        ("file:///data/my%20qdrant", Path("/data/my qdrant")),
        ("file://localhost/data/q", Path("/data/q")),
        ("http://qdrant:6333", None),
        ("https://x.cloud.qdrant.io", None),
        (":memory:", None),
    ],
)
def test_local_path_forms(url: str, expected: Path | None) -> None:
    assert local_path(url, Path("/state")) == expected


@pytest.mark.parametrize("url", ["path:", "file://otherhost/data"])
def test_local_path_refuses_what_names_no_local_directory(url: str) -> None:
    with pytest.raises(VectorStoreConfigError):
        local_path(url, Path("/state"))


@pytest.mark.parametrize("form", ["path", "file"])
def test_a_local_path_keeps_the_points_across_a_restart(tmp_path: Path, form: str) -> None:
    where = tmp_path / "kept"
    url = f"path:{where}" if form == "path" else where.as_uri()
    settings = _settings(tmp_path, qdrant_url=url)
    first = open_vector_store(settings, DIM)
    assert isinstance(first, ClientVectorStore)
    for n in (1, 2, 3):
        first.upsert(*_point(n))
    first.close()
    assert where.is_dir()

    again = open_vector_store(settings, DIM)
    try:
        assert again.count() == 3
        assert [p["id"] for p in again.latest(2)] == [str(uuid.UUID(int=3)), str(uuid.UUID(int=2))]
        assert again.count(SearchFilter(start_ts=1_656_000_002.0)) == 2
    finally:
        again.close()


def test_relative_path_lands_under_the_state_dir(tmp_path: Path) -> None:
    store = open_vector_store(_settings(tmp_path, qdrant_url="path:vectors"), DIM)
    store.close()
    assert (tmp_path / "vectors").is_dir()


def test_credentials_stay_out_of_messages() -> None:
    assert _redacted("https://user:secret@qdrant.example:6333/x") == "https://qdrant.example:6333/x"
    assert _redacted("http://qdrant:6333") == "http://qdrant:6333"


# ---------------------------------------------------------------- the embedded store's HNSW


def test_edge_store_takes_the_hnsw_settings(tmp_path: Path) -> None:
    settings = BtcpulseSettings(state_dir=tmp_path, qdrant_hnsw_m=24, qdrant_hnsw_ef_construct=180)
    store = open_vector_store(settings, DIM)
    try:
        assert isinstance(store, EdgeVectorStore)
        store.upsert(*_point(1))
    finally:
        store.close()
    config = json.loads((tmp_path / "qdrant" / "news" / "edge_config.json").read_text())
    assert (config["hnsw_config"]["m"], config["hnsw_config"]["ef_construct"]) == (24, 180)
    # and an existing shard opens with new ones, its points kept
    again = EdgeVectorStore(tmp_path / "qdrant" / "news", DIM, hnsw_m=8, hnsw_ef_construct=64)
    try:
        assert again.count() == 1
    finally:
        again.close()
    config = json.loads((tmp_path / "qdrant" / "news" / "edge_config.json").read_text())
    assert config["hnsw_config"]["m"] == 8

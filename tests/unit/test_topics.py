"""cluster.topics without a broker: the Avro definitions Pulsar stores, RecordSchema's JSON
encode/decode (and what it refuses), and the topic names derived from settings."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from cluster.records import DeadLetter, NewsEvent, NewsItem, PriceTick, Record, ScoredArticle, WindowAggregate
from cluster.settings import BtcpulseSettings
from cluster.topics import RecordSchema, Topic, Topics, avro_definition

T0 = datetime(2022, 7, 5, 4, 24, tzinfo=UTC)
ALL = [NewsItem, PriceTick, ScoredArticle, WindowAggregate, DeadLetter]


def _item() -> NewsItem:
    return NewsItem.create(
        source="coindesk",
        url="https://example.com/a",
        title="Bitcoin “rallies” €",
        summary="Ünïcödé summary",
        published_at=T0,
        fetched_at=T0,
    )


def _samples() -> list[Record]:
    item = _item()
    return [
        item,
        PriceTick.create(
            source="bitstamp", symbol="BTCUSD", ts=T0, open=1, high=2, low=0.5, close=1.5, volume=3
        ),
        ScoredArticle.from_news(item, sentiment=0.75, label="positive", model="m", analyzed_at=T0),
        WindowAggregate(
            start="2022-07-05T04:24:00Z",
            step_s=60,
            count=0,
            sentiment_mean=None,
            positive=0,
            neutral=0,
            negative=0,
        ),
        DeadLetter(
            topic="t",
            message_id="1:2:3",
            reason="why",
            payload="\ufffd",
            redeliveries=2,
            failed_at="2022-01-01T00:00:00Z",
        ),
    ]


# ---------------------------------------------------------------- avro_definition


def test_avro_definition_news_item() -> None:
    d = avro_definition(NewsItem)
    assert d["type"] == "record"
    assert d["name"] == "NewsItem"
    assert d["namespace"] == "btcpulse"
    assert d["fields"] == [
        {"name": "id", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "url", "type": "string"},
        {"name": "title", "type": "string"},
        {"name": "summary", "type": "string"},
        {"name": "published_at", "type": "string"},
        {"name": "fetched_at", "type": "string"},
        {"name": "time_estimated", "type": "boolean", "default": False},
        {"name": "schema_version", "type": "long", "default": 1},
    ]


def test_avro_definition_optional_fields_are_nullable_with_default() -> None:
    fields = {f["name"]: f for f in avro_definition(WindowAggregate)["fields"]}
    for name in ("sentiment_mean", "open", "high", "low", "close"):
        assert fields[name] == {"name": name, "type": ["null", "double"], "default": None}
    for name in ("count", "positive", "neutral", "negative", "step_s"):
        assert fields[name] == {"name": name, "type": "long"}
    assert fields["start"] == {"name": "start", "type": "string"}


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_avro_definition_covers_every_field_in_order(cls: type[Record]) -> None:
    d = avro_definition(cls)
    assert [f["name"] for f in d["fields"]] == [f.name for f in dataclasses.fields(cls)]
    assert "SCHEMA_VERSION" not in {f["name"] for f in d["fields"]}
    json.dumps(d)  # Pulsar stores it as JSON


def test_avro_definition_price_tick_types() -> None:
    types = {f["name"]: f["type"] for f in avro_definition(PriceTick)["fields"]}
    assert types["open"] == types["close"] == types["volume"] == "double"
    assert types["interval_s"] == "long"


# ---------------------------------------------------------------- RecordSchema encode / decode


@pytest.mark.parametrize("record", _samples(), ids=lambda r: type(r).__name__)
def test_encode_decode_round_trip(record: Record) -> None:
    schema = RecordSchema(type(record))
    data = schema.encode(record)
    assert isinstance(data, bytes)
    assert json.loads(data) == record.to_dict()
    assert schema.decode(data) == record


def test_encode_is_compact_utf8_json() -> None:
    data = RecordSchema(NewsItem).encode(_item())
    assert b", " not in data
    assert b'": ' not in data
    assert "“rallies” €".encode() in data  # not \u-escaped
    assert data.startswith(b'{"id":"')


def test_encode_wrong_record_type_raises() -> None:
    with pytest.raises(TypeError):
        RecordSchema(NewsItem).encode(_samples()[1])


def test_decode_ignores_unknown_keys() -> None:
    item = _item()
    raw = json.dumps({**item.to_dict(), "schema_version": 1, "language": "en", "extra": {"x": 1}}).encode()
    assert RecordSchema(NewsItem).decode(raw) == item


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"1", b"null", b"true"])
def test_decode_non_object_raises_type_error(raw: bytes) -> None:
    with pytest.raises(TypeError, match="expected a JSON object"):
        RecordSchema(NewsItem).decode(raw)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"{'id': 1}", b"\xff\xfe\xfd"])
def test_decode_invalid_json_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        RecordSchema(NewsItem).decode(raw)


def test_decode_missing_field_raises_type_error() -> None:
    data = _item().to_dict()
    del data["url"]
    with pytest.raises(TypeError):
        RecordSchema(NewsItem).decode(json.dumps(data).encode())


@pytest.mark.parametrize(
    "override", [{"published_at": "not a time"}, {"sentiment": "very good"}, {"published_at": 12345}]
)
def test_decode_wrongly_typed_fields_raise(override: dict[str, object]) -> None:
    item = _item()
    data = ScoredArticle.from_news(item, sentiment=0.1, label="neutral", model="m", analyzed_at=T0).to_dict()
    raw = json.dumps({**data, **override}).encode()
    with pytest.raises((ValueError, TypeError)):
        RecordSchema(ScoredArticle).decode(raw)


def test_schema_str() -> None:
    assert str(RecordSchema(PriceTick)) == "RecordSchema(PriceTick)"


# ---------------------------------------------------------------- Topics


def test_topics_from_settings_names_and_types() -> None:
    topics = Topics.from_settings(BtcpulseSettings(topic_prefix="persistent://t/ns/x"))
    assert [(t.name, t.record_cls) for t in topics.all()] == [
        ("persistent://t/ns/x.news.raw", NewsItem),
        ("persistent://t/ns/x.prices", PriceTick),
        ("persistent://t/ns/x.news.scored", ScoredArticle),
        ("persistent://t/ns/x.aggregates", WindowAggregate),
        ("persistent://t/ns/x.deadletter", DeadLetter),
        ("persistent://t/ns/x.events", NewsEvent),
    ]


def test_topics_default_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BTCPULSE_TOPIC_PREFIX", raising=False)
    assert (
        Topics.from_settings(BtcpulseSettings()).prices.name == "persistent://public/default/btcpulse.prices"
    )


def test_topic_decode_and_schema() -> None:
    topic = Topic("persistent://public/default/x.prices", PriceTick)
    tick = _samples()[1]
    schema = topic.schema()
    assert isinstance(schema, RecordSchema)
    assert schema.record_cls is PriceTick
    decoded = topic.decode(schema.encode(tick))
    assert isinstance(decoded, PriceTick)
    assert decoded == tick


def test_fields_added_in_version_2_carry_avro_defaults() -> None:
    fields = {f["name"]: f for f in avro_definition(ScoredArticle)["fields"]}
    assert fields["categories"] == {
        "name": "categories",
        "type": {"type": "array", "items": "string"},
        "default": [],
    }
    assert fields["topic_id"]["default"] == -1
    assert fields["story_id"]["default"] == ""
    assert "default" not in fields["title"]  # required since version 1

"""Topics, their schemas, and the Pulsar producer/consumer factories.

A :class:`Topic` couples a topic name with its record type; its schema (a Pulsar JSON
schema generated from the frozen dataclass) is the only place records become bytes.

    news.raw      NewsItem        sources -> analysis
    prices        PriceTick       price sources -> aggregator
    news.scored   ScoredArticle   analysis -> aggregator, live readers
    aggregates    WindowAggregate aggregator -> live readers
    events        NewsEvent       aggregator (burst detector) -> live readers, webhook
    deadletter    DeadLetter      any consumer -> operators (GET /api/deadletters)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args, get_origin

import _pulsar
import pulsar
from pulsar.schema import Schema

from cluster.records import (
    DeadLetter,
    NewsEvent,
    NewsItem,
    PriceTick,
    Record,
    ScoredArticle,
    WindowAggregate,
)
from cluster.settings import BtcpulseSettings

R = TypeVar("R", bound=Record)

_AVRO = {str: "string", float: "double", int: "long", bool: "boolean"}


def _avro_type(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return ["null", _avro_type(inner[0])]
    if origin is list:
        return {"type": "array", "items": _avro_type(get_args(tp)[0])}
    return _AVRO[tp]


def avro_definition(cls: type[Record]) -> dict[str, Any]:
    """The Avro record definition Pulsar stores for a JSON schema of ``cls``."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        entry: dict[str, Any] = {"name": f.name, "type": _avro_type(hints[f.name])}
        if isinstance(entry["type"], list):
            entry["default"] = None
        elif f.default is not dataclasses.MISSING:
            entry["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING and get_origin(hints[f.name]) is list:
            entry["default"] = []
        # Fields added in a later version carry defaults, so the schemas stay compatible.
        fields.append(entry)
    return {"type": "record", "name": cls.__name__, "namespace": "btcpulse", "fields": fields}


class RecordSchema(Schema):
    """Pulsar JSON schema for a frozen record dataclass (registered with the broker)."""

    def __init__(self, record_cls: type[Record]) -> None:
        super().__init__(record_cls, _pulsar.SchemaType.JSON, avro_definition(record_cls), "JSON")
        self.record_cls = record_cls

    def encode(self, obj: Record) -> bytes:
        self._validate_object_type(obj)
        return json.dumps(obj.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def decode(self, data: bytes) -> Record:
        """Decode one message; raises ``ValueError``/``TypeError`` on a payload that does not fit."""
        value = json.loads(data)
        if not isinstance(value, dict):
            raise TypeError(f"expected a JSON object, got {type(value).__name__}")
        return self.record_cls.from_dict(value)

    def __str__(self) -> str:
        return f"RecordSchema({self.record_cls.__name__})"


@dataclass(frozen=True)
class Topic(Generic[R]):
    """A topic name and the record type it carries."""

    name: str
    record_cls: type[R]

    def schema(self) -> RecordSchema:
        return RecordSchema(self.record_cls)

    def decode(self, data: bytes) -> R:
        return typing.cast(R, self.schema().decode(data))


@dataclass(frozen=True)
class Topics:
    news_raw: Topic[NewsItem]
    prices: Topic[PriceTick]
    news_scored: Topic[ScoredArticle]
    aggregates: Topic[WindowAggregate]
    deadletter: Topic[DeadLetter]
    events: Topic[NewsEvent]

    @classmethod
    def from_settings(cls, settings: BtcpulseSettings) -> Topics:
        p = settings.topic_prefix
        return cls(
            news_raw=Topic(f"{p}.news.raw", NewsItem),
            prices=Topic(f"{p}.prices", PriceTick),
            news_scored=Topic(f"{p}.news.scored", ScoredArticle),
            aggregates=Topic(f"{p}.aggregates", WindowAggregate),
            deadletter=Topic(f"{p}.deadletter", DeadLetter),
            events=Topic(f"{p}.events", NewsEvent),
        )

    def all(self) -> list[Topic[Any]]:
        return [self.news_raw, self.prices, self.news_scored, self.aggregates, self.deadletter, self.events]


def connect(settings: BtcpulseSettings) -> pulsar.Client:
    """A Pulsar client for the configured cluster (quiet logging: warnings and worse)."""
    return pulsar.Client(
        settings.pulsar_service_url,
        operation_timeout_seconds=30,
        connection_timeout_ms=10_000,
        logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn),
    )


# Messages per producer batch; the broker dispatches (and counts backlog in) whole batches.
PRODUCER_BATCH_MAX = 200


def ensure_topics(settings: BtcpulseSettings) -> int:
    """Create news.raw as a partitioned topic before anything auto-creates it unpartitioned;
    returns its partition count (0: it exists unpartitioned, from an older version). The other
    topics are created on first use."""
    from cluster.pulsar_admin import ensure_partitioned

    raw = Topics.from_settings(settings).news_raw.name
    return ensure_partitioned(settings, raw, settings.news_partitions)


def _key_shared(topic: Topic[Any]) -> bool:
    """Topics whose subscribers share messages by key (news.raw: one article, one actor)."""
    return topic.record_cls is NewsItem


def create_producer(client: pulsar.Client, topic: Topic[Any], *, name: str | None = None) -> pulsar.Producer:
    """A producer for ``topic``. With a fixed ``name`` the broker deduplicates by sequence id,
    so a restarted producer that resends with the same ids publishes nothing twice.

    On a key-shared topic a message goes to its key's partition, unbatched: the broker hands a
    batch to one consumer whole, and each article is a key of its own, so a key-based batch
    would hold one message anyway (and key-based batches may go out of sequence-id order,
    which the broker's deduplication would take for resends)."""
    keyed = _key_shared(topic)
    return client.create_producer(
        topic.name,
        producer_name=name,
        schema=topic.schema(),
        block_if_queue_full=True,
        max_pending_messages=2000,
        batching_enabled=not keyed,
        message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution,
        batching_max_messages=PRODUCER_BATCH_MAX,
        batching_max_publish_delay_ms=5,
        send_timeout_millis=0,  # never give up: retry until the broker is back
        compression_type=pulsar.CompressionType.LZ4,
    )


def subscribe(
    client: pulsar.Client,
    topic: Topic[Any] | list[Topic[Any]],
    subscription: str,
    settings: BtcpulseSettings,
    *,
    batch_size: int | None = None,
    wait_ms: int | None = None,
) -> pulsar.Consumer:
    """A durable subscription that receives in batches: Key_Shared on news.raw (the consumers
    of a pool share it, each key — an article id — on one of them at a time), Shared elsewhere.

    Messages are acknowledged by the caller only after its writes are durable; an
    unacknowledged message is redelivered (after a crash, or ``negative_acknowledge``).
    The schema is not enforced at decode time here: consumers decode through
    :meth:`Topic.decode` so a message that does not fit goes to the dead-letter topic
    instead of failing the whole batch.
    """
    topics = topic if isinstance(topic, list) else [topic]
    keyed = all(_key_shared(t) for t in topics)
    return client.subscribe(
        [t.name for t in topics],
        subscription,
        consumer_type=pulsar.ConsumerType.KeyShared if keyed else pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Earliest,
        receiver_queue_size=settings.receiver_queue_size,
        # A partitioned topic's consumer holds a queue per partition: the total is the bound.
        max_total_receiver_queue_size_across_partitions=settings.receiver_queue_size,
        negative_ack_redelivery_delay_ms=1000,
        unacked_messages_timeout_ms=0,
        # A batch's first message comes from receive() (actors.common.consume_batches), the rest
        # from batch_receive(): one fewer than the batch size, within the wait.
        batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(
            max(1, (batch_size or settings.batch_max_size) - 1),
            8 * 1024 * 1024,
            wait_ms or settings.batch_max_wait_ms,
        ),
    )

"""Poison messages on the real stack: a message the consumer cannot decode goes to the
dead-letter topic with its reason, is listed by GET /api/deadletters, and the stream goes on.

(Runs after test_pipeline.py, which counts from an empty stack.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cluster.records import NewsItem
from cluster.topics import Topics, connect, create_producer

pytestmark = pytest.mark.integration


def test_poison_message_is_dead_lettered_and_the_stream_goes_on(stack) -> None:
    settings = stack.settings()
    client = connect(settings)
    try:
        producer = create_producer(client, Topics.from_settings(settings).news_raw)
        # Fits the topic's schema on the wire, but its times are not times: it cannot be analysed.
        poison = NewsItem(
            id="poison-0001",
            source="reliability-test",
            url="https://example.com/poison",
            title="poison",
            summary="",
            published_at="not a time",
            fetched_at="yesterday-ish",
        )
        good = NewsItem.create(
            source="reliability-test",
            url="https://example.com/after-the-poison",
            title="Bitcoin holds steady after a malformed message",
            published_at=datetime.now(UTC),
        )
        producer.send(poison)
        producer.send(good)
    finally:
        client.close()

    def listed() -> dict | None:
        rows = stack.get("/api/deadletters", limit=50).json()["results"]
        return next((r for r in rows if "poison-0001" in r["payload"]), None)

    letter = stack.wait_for("the poison message in /api/deadletters", listed, timeout=120)
    assert letter["topic"].endswith(".news.raw")
    assert "published_at" in letter["reason"] and "not a time" in letter["reason"]
    stack.wait_for(
        "the next message to be analysed",
        lambda: stack.get("/api/news/latest", source="reliability-test", limit=10).json()["results"],
        timeout=120,
    )
    assert stack.get("/api/deadletters", limit=0).status_code == 422


def test_schema_incompatible_messages_are_refused_or_dead_lettered(stack) -> None:
    """Two ways a message that does not fit news.raw's schema can arrive, and what each gets."""
    import pulsar

    from cluster.records import PriceTick
    from cluster.topics import Topic

    settings = stack.settings()
    topics = Topics.from_settings(settings)
    client = connect(settings)
    try:
        # 1. A producer declaring another record's schema (PriceTick) on news.raw: the broker's
        #    schema registry refuses the producer, so nothing of it reaches the consumers.
        with pytest.raises(pulsar.IncompatibleSchema):
            client.create_producer(
                topics.news_raw.name, schema=Topic(topics.news_raw.name, PriceTick).schema()
            )
        # 2. A producer with no schema at all sending bytes that are not JSON: admitted (Pulsar
        #    lets schema-less bytes through), so the consumer must dead-letter it.
        raw = client.create_producer(topics.news_raw.name)
        raw.send(b"\xff\xfe not json \x00 <script>alert(1)</script>")
        raw.send(b'{"schema_version": 99, "id": "bytes-0001"}')
        good = NewsItem.create(
            source="reliability-test",
            url="https://example.com/after-the-bytes",
            title="Bitcoin steady after two schema-less messages",
            published_at=datetime.now(UTC),
        )
        create_producer(client, topics.news_raw).send(good)
    finally:
        client.close()

    def letters() -> list[dict]:
        rows = stack.get("/api/deadletters", limit=100).json()["results"]
        return [r for r in rows if "not json" in r["payload"] or "bytes-0001" in r["payload"]]

    found = stack.wait_for(
        "both schema-less messages in /api/deadletters", lambda: len(letters()) == 2 and letters()
    )
    assert all(r["topic"].endswith(".news.raw") and "undecodable NewsItem" in r["reason"] for r in found), (
        found
    )
    stack.wait_for(
        "the message after them to be analysed",
        lambda: any(a["id"] == good.id for a in stack.get("/api/news/latest", limit=50).json()["results"]),
        timeout=120,
    )


def test_a_3mb_message_from_another_producer_is_cut_to_bounds(stack) -> None:
    """The collectors bound every text; a message from another producer need not be. A
    3 MB title fits a Pulsar message: the consumer cuts it to the collectors' bounds, so the
    stores, the scored topic and the dashboard never hold it."""
    settings = stack.settings()
    base = NewsItem.create(
        source="reliability-test",
        url="https://example.com/a-very-long-title",
        title="x",
        published_at=datetime.now(UTC),
    )
    huge = NewsItem(
        id=base.id,
        source="reliability-test",
        url=base.url,
        title="Bitcoin miners <b>move</b> coins " * 100_000,
        summary="y" * 500_000,
        published_at=base.published_at,
        fetched_at=base.fetched_at,
    )
    client = connect(settings)
    try:
        create_producer(client, Topics.from_settings(settings).news_raw).send(huge)
    finally:
        client.close()

    def stored() -> dict | None:
        answer = stack.get(f"/api/news/{base.id}")
        return answer.json() if answer.status_code == 200 else None

    article = stack.wait_for("the cut article", stored, timeout=120)
    assert len(article["title"]) <= settings.max_title_chars
    assert article["title"].startswith("Bitcoin miners move coins")  # the markup went too

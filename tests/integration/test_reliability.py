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

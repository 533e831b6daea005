"""Live updates for a replica: one Pulsar reader per stream, fanned out to every subscriber.

    news.scored ─┐                              ┌─▶ GET /api/stream (server-sent events), per client
    aggregates  ─┼─▶ readers (this replica) ─▶ LiveFeed ─┤
    events      ─┘   (from the latest message)          └─▶ dashboard sessions (wake-up on new data)

However many browser tabs or stream clients are open, the broker serves three readers per
replica. A reader has no subscription and acknowledges nothing: it starts at the newest message
and keeps no backlog, so a slow or closed client never holds data on the broker. Each
subscriber has a bounded queue; when it is full the oldest update is dropped (and counted), so
a stuck client costs bounded memory and never slows the others. A subscriber may pass a
``wake`` callback, called on the event loop after each update it is given (a dashboard
session schedules its redraw from it at once instead of polling its queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulsar

from cluster.settings import BtcpulseSettings
from cluster.topics import Topic, Topics, connect

log = logging.getLogger(__name__)

#: Stream kinds, as clients name them.
KINDS = ("article", "aggregate", "event")


@dataclass(frozen=True)
class Update:
    kind: str  # one of KINDS
    data: dict[str, Any]

    def sse(self) -> str:
        """The update as one server-sent event."""
        return f"event: {self.kind}\ndata: {json.dumps(self.data, ensure_ascii=False)}\n\n"


@dataclass(frozen=True)
class StreamFilter:
    """Which updates a subscriber wants; ``None`` fields do not restrict."""

    kinds: frozenset[str] = frozenset(KINDS)
    source: str | None = None
    sentiment: str | None = None
    category: str | None = None
    topic: int | None = None

    def accepts(self, update: Update) -> bool:
        if update.kind not in self.kinds:
            return False
        if update.kind != "article":
            return True
        d = update.data
        return (
            (self.source is None or d.get("source") == self.source)
            and (self.sentiment is None or d.get("sentiment_label") == self.sentiment)
            and (self.category is None or self.category in d.get("categories", []))
            and (self.topic is None or d.get("topic_id") == self.topic)
        )


@dataclass(eq=False)
class Subscription:
    flt: StreamFilter
    queue: asyncio.Queue[Update]
    dropped: int = 0
    _feed: LiveFeed | None = field(default=None, repr=False)
    #: called on the event loop after each update is queued (it must not block)
    wake: Callable[[], None] | None = field(default=None, repr=False)

    def put(self, update: Update) -> None:
        """Called on the event loop: enqueue, dropping the oldest when full; then wake."""
        while True:
            try:
                self.queue.put_nowait(update)
                break
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1
        if self.wake is not None:
            try:
                self.wake()
            except Exception:  # one subscriber's failure must not stop the others' updates
                log.exception("live feed: a subscriber's wake-up failed")

    def drain(self) -> list[Update]:
        """Everything queued now, without waiting."""
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return out

    def close(self) -> None:
        self.wake = None
        if self._feed is not None:
            self._feed.unsubscribe(self)
            self._feed = None


class LiveFeed:
    """Readers on the scored-news, aggregates and events topics, started on first use.

    Args:
        settings: where Pulsar is, and the topic names.
        loop: the event loop subscribers live on (the replica's); updates are handed to it.
    """

    def __init__(self, settings: BtcpulseSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._client: pulsar.Client | None = None
        self._readers: list[Any] = []
        self.stats: Counter[str] = Counter()

    def start(self) -> None:
        """Open the readers (idempotent); they start at the newest message of each topic."""
        with self._lock:
            if self._client is not None:
                return
            topics = Topics.from_settings(self._settings)
            self._client = connect(self._settings)
            for kind, topic in (
                ("article", topics.news_scored),
                ("aggregate", topics.aggregates),
                ("event", topics.events),
            ):
                self._readers.append(
                    self._client.create_reader(
                        topic.name,
                        pulsar.MessageId.latest,
                        reader_listener=self._listener(kind, topic),
                        receiver_queue_size=1000,
                    )
                )

    def _listener(self, kind: str, topic: Topic[Any]) -> Any:
        def on_message(_reader: Any, msg: pulsar.Message) -> None:  # Pulsar's listener thread
            try:
                update = Update(kind, topic.decode(msg.data()).to_dict())
            except (ValueError, TypeError) as exc:
                self.stats["undecodable"] += 1
                log.debug("live feed: skipped an undecodable %s: %s", kind, exc)
                return
            self.stats[kind] += 1
            self._loop.call_soon_threadsafe(self._dispatch, update)

        return on_message

    def _dispatch(self, update: Update) -> None:
        for sub in list(self._subs):
            if sub.flt.accepts(update):
                sub.put(update)

    def subscribe(
        self, flt: StreamFilter | None = None, maxsize: int = 1000, wake: Callable[[], None] | None = None
    ) -> Subscription:
        """A new subscriber (call on the event loop); close it when done. ``wake``, if given,
        is called on the event loop after each update queued for it."""
        self.start()
        sub = Subscription(flt or StreamFilter(), asyncio.Queue(maxsize), _feed=self, wake=wake)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.stats["dropped"] += sub.dropped
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        with self._lock:
            for reader in self._readers:
                with contextlib.suppress(Exception):
                    reader.close()
            self._readers.clear()
            if self._client is not None:
                self._client.close()
                self._client = None

"""Pulsar's admin REST API: backlogs (health, the analysis pool, tests) and partitioned topics.

A partitioned topic has no ``/stats`` of its own (its partitions do); ``/partitioned-stats``
sums them, with the same fields, so callers need not know which kind a topic is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from cluster.settings import BtcpulseSettings


@dataclass(frozen=True, slots=True)
class Backlog:
    backlog: int  # messages not yet acknowledged by the subscription
    unacked: int  # delivered to a consumer, not yet acknowledged
    consumers: int


def _topic_url(settings: BtcpulseSettings, topic: str, what: str) -> str:
    # persistent://tenant/ns/name -> /admin/v2/persistent/tenant/ns/name/<what>
    scheme, rest = topic.split("://", 1)
    return f"{settings.pulsar_http_url}/admin/v2/{scheme}/{quote(rest)}/{what}"


def topic_stats(settings: BtcpulseSettings, topic: str) -> dict[str, Any] | None:
    """The broker's stats of ``topic`` (``msgInCounter``, ``subscriptions``, …), summed over its
    partitions when it has some; ``None`` when it does not exist or the broker does not answer."""
    for what in ("stats", "partitioned-stats"):
        try:
            resp = httpx.get(_topic_url(settings, topic, what), timeout=5)
        except httpx.HTTPError:
            return None
        if resp.status_code == 200:
            stats: dict[str, Any] = resp.json()
            return stats
        if resp.status_code != 404:
            return None
    return None


def partitions(settings: BtcpulseSettings, topic: str) -> int | None:
    """How many partitions ``topic`` has (0: it is not partitioned, or does not exist yet);
    ``None`` when the admin API does not answer."""
    try:
        resp = httpx.get(_topic_url(settings, topic, "partitions"), timeout=5)
    except httpx.HTTPError:
        return None
    if resp.status_code == 404:
        return 0
    if resp.status_code != 200:
        return None
    return int(resp.json().get("partitions", 0))


def _exists_unpartitioned(settings: BtcpulseSettings, topic: str) -> bool:
    scheme, rest = topic.split("://", 1)
    namespace = rest.rpartition("/")[0]
    resp = httpx.get(f"{settings.pulsar_http_url}/admin/v2/{scheme}/{quote(namespace)}", timeout=5)
    return resp.status_code == 200 and topic in resp.json()


def ensure_partitioned(settings: BtcpulseSettings, topic: str, count: int) -> int:
    """Make ``topic`` a partitioned topic of at least ``count`` partitions; return how many it has.

    A new topic is created with ``count``; one with fewer partitions grows to ``count`` (Pulsar
    can add partitions, never remove them). A topic that already exists unpartitioned (data of
    an older version) is kept as it is, and 0 returned: consumers read it all the same.
    Raises ``RuntimeError`` when the admin API refuses.
    """
    have = partitions(settings, topic)
    if have is None:
        raise RuntimeError(f"Pulsar's admin API at {settings.pulsar_http_url} does not answer")
    if have >= count:
        return have
    if have == 0 and _exists_unpartitioned(settings, topic):
        return 0
    url = _topic_url(settings, topic, "partitions")
    # PUT creates the partitioned topic; POST adds partitions to one that exists.
    resp = (httpx.post if have else httpx.put)(url, json=count, timeout=30)
    if resp.status_code == 409:  # created meanwhile by another starter: read what it has
        return partitions(settings, topic) or 0
    if resp.status_code not in (200, 204):
        why = f"{resp.status_code} {resp.text[:300]}"
        raise RuntimeError(f"could not create {count} partitions of {topic}: {why}")
    return count


def subscription_backlog(settings: BtcpulseSettings, topic: str, subscription: str) -> Backlog | None:
    """The subscription's backlog, or ``None`` when the topic or subscription does not exist yet."""
    stats = topic_stats(settings, topic)
    sub = stats.get("subscriptions", {}).get(subscription) if stats else None
    if sub is None:
        return None
    return Backlog(
        backlog=int(sub.get("msgBacklog", 0)),
        unacked=int(sub.get("unackedMessages", 0)),
        consumers=len(sub.get("consumers", [])),
    )

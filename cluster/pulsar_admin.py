"""Read-only questions to Pulsar's admin REST API (backlogs for health and tests)."""

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


def _stats_url(settings: BtcpulseSettings, topic: str) -> str:
    # persistent://tenant/ns/name -> /admin/v2/persistent/tenant/ns/name/stats
    scheme, rest = topic.split("://", 1)
    return f"{settings.pulsar_http_url}/admin/v2/{scheme}/{quote(rest)}/stats"


def topic_stats(settings: BtcpulseSettings, topic: str) -> dict[str, Any] | None:
    """The broker's stats of ``topic`` (``msgInCounter``, ``subscriptions``, …), or ``None``."""
    try:
        resp = httpx.get(_stats_url(settings, topic), timeout=5)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    stats: dict[str, Any] = resp.json()
    return stats


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

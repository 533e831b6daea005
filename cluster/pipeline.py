"""Start (or find) the consuming stages of btcpulse on a connected Ray cluster.

One function for every way btcpulse is run: ``btcpulse up`` calls it after Ray is up, and on a
Ray cluster or KubeRay the Serve application's supervisor deployment calls it, so the same
named, detached actors exist whoever started them first (``get_if_exists``).

    vector-store    Qdrant (embedded shard or server) and story assignment
    topic-model     the shared online topic model
    aggregator      news.scored + prices -> windows, events
    analysis-pool   the analysis actors, sized by news.raw's backlog (actors.pool)
"""

from __future__ import annotations

from typing import Any

from cluster.settings import BtcpulseSettings


def start_pipeline(settings: BtcpulseSettings, *, timeout_s: float = 600) -> dict[str, Any]:
    """Create the stage actors that do not exist yet; return their handles by name once each has
    finished ``__init__`` (models loaded, subscriptions open)."""
    import ray

    from actors.aggregator import AggregatorConsumer
    from actors.common import on_head
    from actors.pool import POOL, AnalysisPool
    from actors.topics import TopicModelActor
    from actors.vector_store import VectorStoreActor
    from cluster.topics import ensure_topics
    from serve.read import AGGREGATOR, TOPIC_MODEL, VECTOR_STORE

    ensure_topics(settings)
    head = {"resources": on_head()} if settings.stateful_on_head else {}
    # An embedded store's files are on the head's disk; a Qdrant server is reachable from anywhere.
    remote_store = (settings.qdrant_url or "").startswith(("http://", "https://"))
    store_on = {} if remote_store else head
    store = VectorStoreActor.options(name=VECTOR_STORE, get_if_exists=True, **store_on).remote(  # type: ignore[attr-defined]
        settings, settings.embedding_dim
    )
    topic_model = TopicModelActor.options(name=TOPIC_MODEL, get_if_exists=True, **head).remote(settings)  # type: ignore[attr-defined]
    aggregator = AggregatorConsumer.options(name=AGGREGATOR, get_if_exists=True, **head).remote(settings)  # type: ignore[attr-defined]
    pool = AnalysisPool.options(name=POOL, get_if_exists=True, **head).remote(settings)  # type: ignore[attr-defined]
    handles: dict[str, Any] = {VECTOR_STORE: store, TOPIC_MODEL: topic_model, AGGREGATOR: aggregator}
    ray.get([h.stats.remote() for h in handles.values()], timeout=timeout_s)
    # The pool's first actors are up (models loaded) when this returns.
    handles.update(ray.get(pool.ready.remote(timeout_s), timeout=timeout_s + 30))
    handles[POOL] = pool
    return handles
